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

use crate::engine::errors::store_status;
use crate::sealing::{Sealer, is_sealed, open_stored};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair, RsaPublicKeyComponents};
use serde_json::{Value, json};
use tasklane_core::{AuthToken, Clock, Status, Timestamp};
use tasklane_store::{RecordCondition, RecordPut, Store, StoreError};

const KEY_RECORD: &str = "oidc:signing-key";
const PREVIOUS_KEY_RECORD: &str = "oidc:signing-key:previous";
const JOB_KEY_RECORD: &str = "jobs:token-key";
const PREVIOUS_JOB_KEY_RECORD: &str = "jobs:token-key:previous";
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(3600);
/// A cached token is reused until this long before it expires.
const REUSE_MARGIN: Duration = Duration::from_secs(300);
const RSA_BITS: usize = 2048;
/// A replaced signing key stays in the JWKS this long: the tokens it signed live an hour.
const PREVIOUS_KEY_KEPT: Duration = Duration::from_secs(2 * 3600);
/// Job tokens made with a replaced HMAC key still verify this long (the longest a job
/// token lives is a pull lease plus its slack).
pub const PREVIOUS_JOB_KEY_KEPT: Duration = Duration::from_secs(24 * 3600);
/// Keys are read again this often, so a rotation on another node is picked up even if
/// its announcement was missed.
const KEYS_RELOAD: Duration = Duration::from_secs(30);

struct SigningKey {
    pair: RsaKeyPair,
    kid: String,
}

/// The keys in use: the current ones sign, the previous ones still verify.
struct Keys {
    current: SigningKey,
    previous: Option<SigningKey>,
    job: ring::hmac::Key,
    job_previous: Option<ring::hmac::Key>,
    loaded: std::time::Instant,
}

/// Signs tokens and publishes the keys that verify them.
pub struct TokenSigner {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    issuer: String,
    sealer: Option<Arc<Sealer>>,
    keys: tokio::sync::RwLock<Option<Arc<Keys>>>,
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

fn signing_key(der: &[u8]) -> Result<SigningKey, Status> {
    let pair = RsaKeyPair::from_pkcs8(der)
        .map_err(|e| Status::internal(format!("the stored signing key is unusable: {e}")))?;
    let n = RsaPublicKeyComponents::<Vec<u8>>::from(pair.public()).n;
    let kid = b64(&ring::digest::digest(&ring::digest::SHA256, &n).as_ref()[..12]);
    Ok(SigningKey { pair, kid })
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
            sealer: None,
            keys: tokio::sync::RwLock::new(None),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Keep the keys sealed with `sealer` in the store (`--secret-key-file`).
    pub fn sealed_with(mut self, sealer: Option<Arc<Sealer>>) -> TokenSigner {
        self.sealer = sealer;
        self
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Read the keys again at the next use (after a rotation on this or another node).
    pub async fn invalidate(&self) {
        *self.keys.write().await = None;
        if let Ok(mut cache) = self.cache.lock() {
            cache.clear();
        }
    }

    async fn keys(&self) -> Result<Arc<Keys>, Status> {
        if let Some(k) = self.keys.read().await.as_ref()
            && k.loaded.elapsed() < KEYS_RELOAD
        {
            return Ok(k.clone());
        }
        let mut slot = self.keys.write().await;
        if let Some(k) = slot.as_ref()
            && k.loaded.elapsed() < KEYS_RELOAD
        {
            return Ok(k.clone());
        }
        let der = self
            .stored_secret(KEY_RECORD, || async {
                // Generating a key takes a moment: only when none is stored yet.
                tokio::task::spawn_blocking(generate_pkcs8)
                    .await
                    .map_err(|e| Status::internal(format!("key generation stopped: {e}")))?
            })
            .await?;
        let job = self
            .stored_secret(JOB_KEY_RECORD, || async { super::random_bytes::<32>("a job key").map(Vec::from) })
            .await?;
        let previous = self.stored_optional(PREVIOUS_KEY_RECORD).await?.map(|d| signing_key(&d)).transpose()?;
        let job_previous = self
            .stored_optional(PREVIOUS_JOB_KEY_RECORD)
            .await?
            .map(|k| ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &k));
        let keys = Arc::new(Keys {
            current: signing_key(&der)?,
            previous,
            job: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &job),
            job_previous,
            loaded: std::time::Instant::now(),
        });
        *slot = Some(keys.clone());
        Ok(keys)
    }

    fn seal(&self, record: &str, plain: Vec<u8>) -> Result<Vec<u8>, Status> {
        match &self.sealer {
            Some(s) => s.seal(record, &plain),
            None => Ok(plain),
        }
    }

    /// A stored secret's plain value, if it exists. A plain one is sealed in place when a
    /// sealer is configured (a store from before `--secret-key-file`).
    async fn stored_optional(&self, record: &str) -> Result<Option<Vec<u8>>, Status> {
        let Some(r) = self.store.record_get(record, self.clock.now()).await.map_err(store_status)? else {
            return Ok(None);
        };
        let plain = open_stored(self.sealer.as_deref(), record, &r.value)?;
        if self.sealer.is_some() && !is_sealed(&r.value) {
            let put = RecordPut {
                key: record.into(),
                value: self.seal(record, plain.clone())?,
                condition: RecordCondition::Version(r.version),
                expires_at: None,
                now: self.clock.now(),
            };
            match self.store.record_put(put).await {
                Ok(_) => tracing::info!(record, "sealed a stored key with the secret key file"),
                Err(StoreError::RecordConflict) => {}
                Err(e) => return Err(store_status(e)),
            }
        }
        Ok(Some(plain))
    }

    /// A stored secret, made on first use: the first node to write it wins.
    async fn stored_secret<F, Fut>(&self, record: &str, make: F) -> Result<Vec<u8>, Status>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Vec<u8>, Status>>,
    {
        if let Some(plain) = self.stored_optional(record).await? {
            return Ok(plain);
        }
        let plain = make().await?;
        let now = self.clock.now();
        let put = RecordPut {
            key: record.into(),
            value: self.seal(record, plain.clone())?,
            condition: RecordCondition::Absent,
            expires_at: None,
            now,
        };
        match self.store.record_put(put).await {
            Ok(_) => Ok(plain),
            Err(StoreError::RecordConflict) => {
                self.stored_optional(record).await?.ok_or_else(|| Status::internal("a stored secret vanished"))
            }
            Err(e) => Err(store_status(e)),
        }
    }

    /// At start: the stored keys, if any, can be opened (with the right `--secret-key-file`),
    /// and keys kept in plain text from before are sealed now, not at their first use.
    pub async fn check_stored(&self) -> Result<(), Status> {
        let stored = self.store.record_get(KEY_RECORD, self.clock.now()).await.map_err(store_status)?;
        if stored.is_some() {
            self.keys().await?;
        }
        Ok(())
    }

    /// Replace the signing key and the job-token key. The old signing key stays in the JWKS
    /// and the old job key keeps verifying for a while, so tokens already out stay valid.
    /// Returns the new signing key's `kid`.
    pub async fn rotate(&self) -> Result<String, Status> {
        let now = self.clock.now();
        for (current, previous, kept) in [
            (KEY_RECORD, PREVIOUS_KEY_RECORD, PREVIOUS_KEY_KEPT),
            (JOB_KEY_RECORD, PREVIOUS_JOB_KEY_RECORD, PREVIOUS_JOB_KEY_KEPT),
        ] {
            let old = self.store.record_get(current, now).await.map_err(store_status)?;
            let fresh = if current == KEY_RECORD {
                tokio::task::spawn_blocking(generate_pkcs8)
                    .await
                    .map_err(|e| Status::internal(format!("key generation stopped: {e}")))??
            } else {
                Vec::from(super::random_bytes::<32>("a key")?)
            };
            if let Some(old) = &old {
                let plain = open_stored(self.sealer.as_deref(), current, &old.value)?;
                let put = RecordPut {
                    key: previous.into(),
                    value: self.seal(previous, plain)?,
                    condition: RecordCondition::Always,
                    expires_at: Some(now.saturating_add(kept)),
                    now,
                };
                self.store.record_put(put).await.map_err(store_status)?;
            }
            let put = RecordPut {
                key: current.into(),
                value: self.seal(current, fresh)?,
                condition: old.as_ref().map_or(RecordCondition::Absent, |o| RecordCondition::Version(o.version)),
                expires_at: None,
                now,
            };
            self.store.record_put(put).await.map_err(|e| match e {
                StoreError::RecordConflict => {
                    Status::aborted("Another rotation changed the keys at the same time; run it again.")
                }
                other => store_status(other),
            })?;
        }
        self.invalidate().await;
        Ok(self.keys().await?.current.kid.clone())
    }

    /// A token that lets a worker report on `job` until `expires`: `EXPIRY.MAC`.
    pub async fn job_token(&self, job: &str, expires: Timestamp) -> Result<String, Status> {
        let keys = self.keys().await?;
        let exp = expires.0.div_euclid(1_000_000);
        let mac = ring::hmac::sign(&keys.job, format!("{job}.{exp}").as_bytes());
        Ok(format!("{exp}.{}", b64(mac.as_ref())))
    }

    /// Check a job token: it names this job, has not expired, and was made with the
    /// current key or the one it replaced.
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
        let keys = self.keys().await?;
        let message = format!("{job}.{exp}");
        let verified = std::iter::once(&keys.job)
            .chain(keys.job_previous.as_ref())
            .any(|k| ring::hmac::verify(k, message.as_bytes(), &mac).is_ok());
        if !verified || exp * 1_000_000 <= self.clock.now().0 {
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
        let keys = self.keys().await?;
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
            "jti": b64(&super::random_bytes::<16>("a token id")?),
        });
        if oidc {
            claims["aud"] = json!(param);
        } else {
            // tasklane cannot mint Google access tokens; it sends a JWT naming the scope.
            claims["aud"] = json!(self.issuer);
            claims["scope"] = json!(param);
        }
        let token = sign_with(&keys.current, &claims)?;
        if let Ok(mut cache) = self.cache.lock() {
            cache.retain(|_, (_, expires)| expires.since(now) > REUSE_MARGIN);
            cache.insert(cache_key, (token.clone(), Timestamp(exp * 1_000_000)));
        }
        Ok(token)
    }

    /// A JWT of `claims`, signed with the key the JWKS publishes.
    pub async fn sign(&self, claims: &Value) -> Result<String, Status> {
        sign_with(&self.keys().await?.current, claims)
    }

    /// The JSON Web Key Set: the current key, then the one it replaced while tokens it
    /// signed may still be in use.
    pub async fn jwks(&self) -> Result<Value, Status> {
        let keys = self.keys().await?;
        let jwk = |key: &SigningKey| {
            let public = RsaPublicKeyComponents::<Vec<u8>>::from(key.pair.public());
            json!({ "kty": "RSA", "alg": "RS256", "use": "sig", "kid": key.kid, "n": b64(&public.n), "e": b64(&public.e) })
        };
        let all: Vec<Value> = std::iter::once(&keys.current).chain(keys.previous.as_ref()).map(jwk).collect();
        Ok(json!({ "keys": all }))
    }

    /// The OpenID Provider metadata that points to the JWKS.
    pub fn discovery(&self) -> Value {
        json!({
            "issuer": self.issuer,
            "jwks_uri": format!("{}/.well-known/jwks.json", self.issuer),
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "claims_supported": ["aud", "azp", "email", "email_verified", "exp", "iat", "iss", "jti", "sub"],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tasklane_core::ManualClock;
    use tasklane_store::SqliteStore;

    struct Fixture {
        signer: TokenSigner,
        clock: ManualClock,
        store: Arc<dyn Store>,
        dir: std::path::PathBuf,
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn fixture(tag: &str, sealer: Option<Arc<Sealer>>) -> Fixture {
        let dir = std::env::temp_dir().join(format!("tasklane-oidc-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.join("db")).unwrap());
        let clock = ManualClock::new(Timestamp::from_secs(1_800_000_000));
        let signer = TokenSigner::new(store.clone(), Arc::new(clock.clone()), "https://tasks.example/".into())
            .sealed_with(sealer);
        Fixture { signer, clock, store, dir }
    }

    fn decode(token: &str) -> (Value, Value) {
        let mut parts = token.split('.');
        let mut part = || serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts.next().unwrap()).unwrap()).unwrap();
        (part(), part())
    }

    fn kids(jwks: &Value) -> Vec<String> {
        jwks["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap().to_string()).collect()
    }

    #[tokio::test]
    async fn oidc_and_oauth_tokens_carry_googles_claims() {
        let f = fixture("claims", None);
        let oidc =
            AuthToken::Oidc { service_account_email: "sa@p.iam.gserviceaccount.com".into(), audience: String::new() };
        let (header, claims) = decode(&f.signer.token(&oidc, "https://worker.example/run").await.unwrap());
        assert_eq!(header["alg"], "RS256");
        assert_eq!(header["kid"], kids(&f.signer.jwks().await.unwrap())[0]);
        assert_eq!(claims["iss"], "https://tasks.example", "the public URL is the issuer");
        assert_eq!(claims["aud"], "https://worker.example/run", "an empty audience is the task's URL");
        assert_eq!(claims["email"], "sa@p.iam.gserviceaccount.com");
        assert_eq!(claims["email_verified"], true);
        assert_eq!(claims["iat"], 1_800_000_000);
        assert_eq!(claims["exp"], 1_800_000_000 + 3600);
        let sub = claims["sub"].as_str().unwrap();
        assert!(sub.len() == 21 && sub.starts_with('1') && sub.bytes().all(|b| b.is_ascii_digit()), "{sub}");
        assert_eq!(claims["azp"], sub);
        assert!(claims["jti"].as_str().is_some_and(|j| j.len() >= 20));
        // The numeric id is stable per account and differs between accounts.
        let other =
            AuthToken::Oidc { service_account_email: "b@p.iam.gserviceaccount.com".into(), audience: "a".into() };
        let (_, other) = decode(&f.signer.token(&other, "https://w/").await.unwrap());
        assert_ne!(other["sub"], sub);
        assert_eq!(account_id("sa@p.iam.gserviceaccount.com"), sub);

        let oauth = AuthToken::OAuth { service_account_email: "sa@p.example".into(), scope: "https://scope".into() };
        let (_, claims) = decode(&f.signer.token(&oauth, "https://worker.example/").await.unwrap());
        assert_eq!(claims["scope"], "https://scope");
        assert_eq!(claims["aud"], "https://tasks.example");
    }

    #[tokio::test]
    async fn job_tokens_bind_their_job_and_expiry() {
        let f = fixture("job", None);
        let expires = Timestamp::from_secs(1_800_000_100);
        let token = f.signer.job_token("job_a", expires).await.unwrap();
        assert!(f.signer.verify_job_token("job_a", &token).await.is_ok());
        assert!(f.signer.verify_job_token("job_b", &token).await.is_err(), "another job's token");
        let (_, mac) = token.split_once('.').unwrap();
        let stretched = format!("{}.{mac}", 1_900_000_000);
        assert!(f.signer.verify_job_token("job_a", &stretched).await.is_err(), "an expiry changed by hand");
        f.clock.advance(Duration::from_secs(100));
        let err = f.signer.verify_job_token("job_a", &token).await.unwrap_err();
        assert_eq!(err.code, tasklane_core::Code::Unauthenticated, "expired");
    }

    #[tokio::test]
    async fn rotation_keeps_old_tokens_valid_for_a_while() {
        let f = fixture("rotate", None);
        let job_token = f.signer.job_token("job_a", Timestamp::from_secs(1_800_003_600)).await.unwrap();
        let old = kids(&f.signer.jwks().await.unwrap());
        assert_eq!(old.len(), 1);
        let new_kid = f.signer.rotate().await.unwrap();
        let published = kids(&f.signer.jwks().await.unwrap());
        assert_eq!(published, vec![new_kid.clone(), old[0].clone()], "the new key first, the old one still published");
        let oidc = AuthToken::Oidc { service_account_email: "a@b".into(), audience: "x".into() };
        assert_eq!(decode(&f.signer.token(&oidc, "https://w/").await.unwrap()).0["kid"], new_kid);
        assert!(f.signer.verify_job_token("job_a", &job_token).await.is_ok(), "a job token from before still verifies");
        let fresh = f.signer.job_token("job_a", Timestamp::from_secs(1_800_003_600)).await.unwrap();
        assert_ne!(fresh, job_token, "new job tokens use the new key");
        // After the grace periods only the new keys remain.
        f.clock.advance(PREVIOUS_JOB_KEY_KEPT + Duration::from_secs(1));
        f.signer.invalidate().await;
        assert_eq!(kids(&f.signer.jwks().await.unwrap()), vec![new_kid]);
        assert!(f.signer.verify_job_token("job_a", &job_token).await.is_err());
    }

    #[tokio::test]
    async fn sealed_keys_are_unreadable_without_the_master_key() {
        let sealer = Arc::new(Sealer::from_secret(&[9u8; 32]));
        let f = fixture("sealed", Some(sealer));
        let jwks = f.signer.jwks().await.unwrap();
        let now = f.clock.now();
        for record in [KEY_RECORD, JOB_KEY_RECORD] {
            let stored = f.store.record_get(record, now).await.unwrap().unwrap();
            assert!(is_sealed(&stored.value), "{record} is sealed at rest");
        }
        let plain = TokenSigner::new(f.store.clone(), Arc::new(f.clock.clone()), "x".into());
        assert!(plain.check_stored().await.unwrap_err().message.contains("--secret-key-file"));
        let wrong = TokenSigner::new(f.store.clone(), Arc::new(f.clock.clone()), "x".into())
            .sealed_with(Some(Arc::new(Sealer::from_secret(&[1u8; 32]))));
        assert!(wrong.check_stored().await.unwrap_err().message.contains("does not open"));
        let right = TokenSigner::new(f.store.clone(), Arc::new(f.clock.clone()), "x".into())
            .sealed_with(Some(Arc::new(Sealer::from_secret(&[9u8; 32]))));
        assert_eq!(right.jwks().await.unwrap(), jwks);
    }

    #[tokio::test]
    async fn keys_stored_in_plain_text_are_sealed_when_a_master_key_arrives() {
        let f = fixture("upgrade", None);
        let jwks = f.signer.jwks().await.unwrap();
        assert!(!is_sealed(&f.store.record_get(KEY_RECORD, f.clock.now()).await.unwrap().unwrap().value));
        let sealed = TokenSigner::new(f.store.clone(), Arc::new(f.clock.clone()), "x".into())
            .sealed_with(Some(Arc::new(Sealer::from_secret(&[9u8; 32]))));
        sealed.check_stored().await.unwrap();
        for record in [KEY_RECORD, JOB_KEY_RECORD] {
            assert!(is_sealed(&f.store.record_get(record, f.clock.now()).await.unwrap().unwrap().value), "{record}");
        }
        assert_eq!(sealed.jwks().await.unwrap(), jwks, "the same key, now sealed");
    }
}
