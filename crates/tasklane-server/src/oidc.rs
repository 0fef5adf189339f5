//! Tokens for tasks with an `oidc_token` or `oauth_token`: RS256 JWTs signed with
//! tasklane's own key, with the claims Google's ID tokens for Cloud Tasks carry, sent as
//! `Authorization: Bearer`. Workers verify them with any OIDC library through
//! `/.well-known/openid-configuration` and the JWKS it points to.
//!
//! The key is an RSA-2048 key made on first use and kept in the store (so every node of a
//! cluster signs with the same key, and it survives restarts). `rsa` only generates it;
//! `ring` signs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair, RsaPublicKeyComponents};
use serde_json::{Value, json};
use tasklane_core::{AuthToken, Clock, Status, Timestamp};
use tasklane_store::{RecordCondition, RecordPut, Store, StoreError};
use tokio::sync::OnceCell;

use crate::service::store_status;

const KEY_RECORD: &str = "oidc:signing-key";
const JOB_KEY_RECORD: &str = "jobs:token-key";
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(3600);
/// A cached token is reused until this long before it expires.
const REUSE_MARGIN: Duration = Duration::from_secs(300);
const RSA_BITS: usize = 2048;

struct SigningKey {
    pair: RsaKeyPair,
    kid: String,
}

/// Signs tokens and publishes the key that verifies them.
pub struct TokenSigner {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    issuer: String,
    key: OnceCell<Arc<SigningKey>>,
    job_key: OnceCell<ring::hmac::Key>,
    cache: Mutex<HashMap<TokenKey, (String, Timestamp)>>,
}

/// What a token is for: (OIDC rather than OAuth, email, audience or scope).
type TokenKey = (bool, String, String);

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn generate_pkcs8() -> Result<Vec<u8>, Status> {
    use rsa::pkcs8::EncodePrivateKey;
    let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, RSA_BITS)
        .map_err(|e| Status::internal(format!("could not generate the token signing key: {e}")))?;
    let der = key.to_pkcs8_der().map_err(|e| Status::internal(format!("could not encode the signing key: {e}")))?;
    Ok(der.as_bytes().to_vec())
}

fn sign_with(key: &SigningKey, claims: &Value) -> Result<String, Status> {
    let header = json!({ "alg": "RS256", "kid": key.kid, "typ": "JWT" });
    let signing_input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
    let mut signature = vec![0u8; key.pair.public().modulus_len()];
    key.pair
        .sign(&RSA_PKCS1_SHA256, &ring::rand::SystemRandom::new(), signing_input.as_bytes(), &mut signature)
        .map_err(|_| Status::internal("could not sign a token"))?;
    Ok(format!("{signing_input}.{}", b64(&signature)))
}

/// A stable numeric id for a service account, as Google gives one (`sub`, `azp`).
fn account_id(email: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, email.as_bytes());
    let mut n = [0u8; 8];
    n.copy_from_slice(&digest.as_ref()[..8]);
    format!("1{:020}", u64::from_be_bytes(n))
}

impl TokenSigner {
    /// `issuer` is tasklane's public base URL, e.g. `http://127.0.0.1:8790`.
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, issuer: String) -> TokenSigner {
        TokenSigner {
            store,
            clock,
            issuer: issuer.trim_end_matches('/').to_string(),
            key: OnceCell::new(),
            job_key: OnceCell::new(),
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    async fn key(&self) -> Result<Arc<SigningKey>, Status> {
        self.key
            .get_or_try_init(|| async {
                // Generating the key takes a moment: only when none is stored yet.
                let der = match self.store.record_get(KEY_RECORD, self.clock.now()).await.map_err(store_status)? {
                    Some(r) => r.value,
                    None => {
                        let generated = tokio::task::spawn_blocking(generate_pkcs8)
                            .await
                            .map_err(|e| Status::internal(format!("key generation stopped: {e}")))??;
                        self.stored_secret(KEY_RECORD, || Ok(generated)).await?
                    }
                };
                let pair = RsaKeyPair::from_pkcs8(&der)
                    .map_err(|e| Status::internal(format!("the stored signing key is unusable: {e}")))?;
                let n = RsaPublicKeyComponents::<Vec<u8>>::from(pair.public()).n;
                let kid = b64(&ring::digest::digest(&ring::digest::SHA256, &n).as_ref()[..12]);
                Ok(Arc::new(SigningKey { pair, kid }))
            })
            .await
            .cloned()
    }

    /// A stored secret, made on first use: the first node to write it wins.
    async fn stored_secret(
        &self,
        record: &str,
        make: impl FnOnce() -> Result<Vec<u8>, Status>,
    ) -> Result<Vec<u8>, Status> {
        let now = self.clock.now();
        if let Some(r) = self.store.record_get(record, now).await.map_err(store_status)? {
            return Ok(r.value);
        }
        let put =
            RecordPut { key: record.into(), value: make()?, condition: RecordCondition::Absent, expires_at: None, now };
        match self.store.record_put(put).await {
            Ok(r) => Ok(r.value),
            Err(StoreError::RecordConflict) => Ok(self
                .store
                .record_get(record, now)
                .await
                .map_err(store_status)?
                .ok_or_else(|| Status::internal("a stored secret vanished"))?
                .value),
            Err(e) => Err(store_status(e)),
        }
    }

    async fn job_key(&self) -> Result<&ring::hmac::Key, Status> {
        self.job_key
            .get_or_try_init(|| async {
                let secret = self
                    .stored_secret(JOB_KEY_RECORD, || {
                        let mut bytes = vec![0u8; 32];
                        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
                            .map_err(|_| Status::internal("no randomness for the job token key"))?;
                        Ok(bytes)
                    })
                    .await?;
                Ok(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret))
            })
            .await
    }

    /// A token that lets a worker report on `job` until `expires`: `EXPIRY.MAC`.
    pub async fn job_token(&self, job: &str, expires: Timestamp) -> Result<String, Status> {
        let key = self.job_key().await?;
        let exp = expires.0.div_euclid(1_000_000);
        let mac = ring::hmac::sign(key, format!("{job}.{exp}").as_bytes());
        Ok(format!("{exp}.{}", b64(mac.as_ref())))
    }

    /// Check a job token: it names this job and has not expired.
    pub async fn verify_job_token(&self, job: &str, token: &str) -> Result<(), Status> {
        let refused = || {
            Status::new(
                tasklane_core::Code::Unauthenticated,
                "The job token is missing, malformed, expired or for another job; use the token the task was delivered with",
            )
        };
        let (exp, mac) = token.split_once('.').ok_or_else(refused)?;
        let exp: i64 = exp.parse().map_err(|_| refused())?;
        let mac = URL_SAFE_NO_PAD.decode(mac).map_err(|_| refused())?;
        let key = self.job_key().await?;
        ring::hmac::verify(key, format!("{job}.{exp}").as_bytes(), &mac).map_err(|_| refused())?;
        if exp * 1_000_000 <= self.clock.now().0 {
            return Err(refused());
        }
        Ok(())
    }

    /// The bearer token for one dispatch of a task with `auth` to `url`.
    pub async fn token(&self, auth: &AuthToken, url: &str) -> Result<String, Status> {
        let (oidc, email, param) = match auth {
            AuthToken::Oidc { service_account_email, audience } => {
                (true, service_account_email, if audience.is_empty() { url } else { audience.as_str() })
            }
            AuthToken::OAuth { service_account_email, scope } => (false, service_account_email, scope.as_str()),
        };
        let now = self.clock.now();
        let cache_key = (oidc, email.clone(), param.to_string());
        if let Ok(cache) = self.cache.lock()
            && let Some((token, expires)) = cache.get(&cache_key)
            && expires.since(now) > REUSE_MARGIN
        {
            return Ok(token.clone());
        }
        let key = self.key().await?;
        let iat = now.0.div_euclid(1_000_000);
        let exp = iat + TOKEN_LIFETIME.as_secs() as i64;
        let id = account_id(email);
        let mut claims = json!({
            "iss": self.issuer,
            "iat": iat,
            "exp": exp,
            "email": email,
            "email_verified": true,
            "sub": id,
            "azp": id,
        });
        if oidc {
            claims["aud"] = json!(param);
        } else {
            // tasklane cannot mint Google access tokens; it sends a JWT naming the scope.
            claims["aud"] = json!(self.issuer);
            claims["scope"] = json!(param);
        }
        let token = sign_with(&key, &claims)?;
        if let Ok(mut cache) = self.cache.lock() {
            cache.retain(|_, (_, expires)| expires.since(now) > REUSE_MARGIN);
            cache.insert(cache_key, (token.clone(), Timestamp(exp * 1_000_000)));
        }
        Ok(token)
    }

    /// A JWT of `claims`, signed with the key the JWKS publishes.
    pub async fn sign(&self, claims: &Value) -> Result<String, Status> {
        sign_with(&*self.key().await?, claims)
    }

    /// The JSON Web Key Set with the public key.
    pub async fn jwks(&self) -> Result<Value, Status> {
        let key = self.key().await?;
        let public = RsaPublicKeyComponents::<Vec<u8>>::from(key.pair.public());
        Ok(json!({ "keys": [{
            "kty": "RSA",
            "alg": "RS256",
            "use": "sig",
            "kid": key.kid,
            "n": b64(&public.n),
            "e": b64(&public.e),
        }]}))
    }

    /// The OpenID Provider metadata that points to the JWKS.
    pub fn discovery(&self) -> Value {
        json!({
            "issuer": self.issuer,
            "jwks_uri": format!("{}/.well-known/jwks.json", self.issuer),
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "claims_supported": ["aud", "azp", "email", "email_verified", "exp", "iat", "iss", "sub"],
        })
    }
}
