//! Reading and writing proto3 JSON by hand: fields by camelCase or snake_case name,
//! integers as numbers or strings, durations like `"0.100s"`, RFC 3339 timestamps,
//! base64 bytes, enums by name or number. Every error names the field to fix.

use base64::Engine;
use serde_json::{Map, Value};
use tasklane_core::status::Detail;
use tasklane_core::{Status, Timestamp};

/// Reads one JSON object, remembering which fields were used so unknown ones are refused.
pub struct Obj<'a> {
    path: String,
    map: Option<&'a Map<String, Value>>,
    used: Vec<String>,
}

fn snake(camel: &str) -> String {
    tasklane_core::queue::snake_case_path(camel)
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() { snake(field) } else { format!("{path}.{}", snake(field)) }
}

/// A request Google's JSON parser could not read: the texts, each also a field violation
/// (with its field when known), as the front end answers.
pub fn parse_error(violations: Vec<(String, String)>) -> Status {
    let message = violations.iter().map(|(_, text)| text.as_str()).collect::<Vec<_>>().join("\n");
    Status::invalid_argument(message).with_detail(Detail::BadRequest { violations })
}

fn invalid_value(path: &str, ty: &str, v: &Value) -> Status {
    parse_error(vec![(path.to_string(), format!("Invalid value at '{path}' ({ty}), {v}"))])
}

impl<'a> Obj<'a> {
    /// `path` is the message's place in the request, as the error messages show it.
    pub fn new(path: &str, value: Option<&'a Value>) -> Result<Obj<'a>, Status> {
        let map = match value {
            None | Some(Value::Null) => None,
            Some(Value::Object(m)) => Some(m),
            Some(other) if path.is_empty() && other.is_array() => return Err(not_a_message()),
            Some(other) => {
                return Err(Status::invalid_argument(format!(
                    "Invalid JSON payload received. Expected an object at '{path}', got {other}"
                )));
            }
        };
        Ok(Obj { path: path.to_string(), map, used: Vec::new() })
    }

    fn raw(&mut self, camel: &str) -> Option<&'a Value> {
        let map = self.map?;
        let snake_name = snake(camel);
        for key in [camel, snake_name.as_str()] {
            if let Some(v) = map.get(key) {
                self.used.push(key.to_string());
                return if v.is_null() { None } else { Some(v) };
            }
        }
        None
    }

    /// Mark a field as known without reading it (output-only fields).
    pub fn ignore(&mut self, camel: &str) {
        let _ = self.raw(camel);
    }

    pub fn string(&mut self, camel: &str) -> Result<Option<String>, Status> {
        match self.raw(camel) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(v) => Err(invalid_value(&join(&self.path, camel), "TYPE_STRING", v)),
        }
    }

    pub fn i64(&mut self, camel: &str) -> Result<Option<i64>, Status> {
        let path = join(&self.path, camel);
        match self.raw(camel) {
            None => Ok(None),
            Some(Value::Number(n)) => match n.as_i64() {
                Some(i) => Ok(Some(i)),
                None => match n.as_f64() {
                    Some(f) if f.fract() == 0.0 && f.abs() < 9.2e18 => Ok(Some(f as i64)),
                    _ => Err(invalid_value(&path, "TYPE_INT64", &Value::Number(n.clone()))),
                },
            },
            Some(Value::String(s)) => {
                s.trim().parse().map(Some).map_err(|_| invalid_value(&path, "TYPE_INT64", &Value::String(s.clone())))
            }
            Some(v) => Err(invalid_value(&path, "TYPE_INT64", v)),
        }
    }

    pub fn i32(&mut self, camel: &str) -> Result<Option<i32>, Status> {
        let path = join(&self.path, camel);
        let bad = |v: &Value| invalid_value(&path, "TYPE_INT32", v);
        match self.raw(camel) {
            None => Ok(None),
            Some(v @ Value::Number(n)) => {
                let f = n.as_f64().unwrap_or(f64::NAN);
                if f.fract() != 0.0 || f < f64::from(i32::MIN) || f > f64::from(i32::MAX) {
                    return Err(bad(v));
                }
                Ok(Some(f as i32))
            }
            Some(v @ Value::String(s)) => s.trim().parse().map(Some).map_err(|_| bad(v)),
            Some(v) => Err(bad(v)),
        }
    }

    pub fn f64(&mut self, camel: &str) -> Result<Option<f64>, Status> {
        let path = join(&self.path, camel);
        match self.raw(camel) {
            None => Ok(None),
            Some(Value::Number(n)) => Ok(n.as_f64()),
            Some(Value::String(s)) => match s.as_str() {
                "NaN" => Ok(Some(f64::NAN)),
                "Infinity" => Ok(Some(f64::INFINITY)),
                "-Infinity" => Ok(Some(f64::NEG_INFINITY)),
                other => {
                    other.parse().map(Some).map_err(|_| invalid_value(&path, "TYPE_DOUBLE", &Value::String(s.clone())))
                }
            },
            Some(v) => Err(invalid_value(&path, "TYPE_DOUBLE", v)),
        }
    }

    /// A `google.protobuf.Duration` as signed microseconds.
    pub fn duration_micros(&mut self, camel: &str) -> Result<Option<i64>, Status> {
        let path = join(&self.path, camel);
        match self.raw(camel) {
            None => Ok(None),
            Some(Value::String(s)) => parse_duration_micros(s).map(Some).ok_or_else(|| {
                invalid_value(&path, "type.googleapis.com/google.protobuf.Duration", &Value::String(s.clone()))
            }),
            Some(v) => Err(invalid_value(&path, "type.googleapis.com/google.protobuf.Duration", v)),
        }
    }

    pub fn timestamp(&mut self, camel: &str) -> Result<Option<Timestamp>, Status> {
        let path = join(&self.path, camel);
        match self.raw(camel) {
            None => Ok(None),
            Some(Value::String(s)) => parse_timestamp(s).map(Some).ok_or_else(|| {
                invalid_value(&path, "type.googleapis.com/google.protobuf.Timestamp", &Value::String(s.clone()))
            }),
            Some(v) => Err(invalid_value(&path, "type.googleapis.com/google.protobuf.Timestamp", v)),
        }
    }

    pub fn bytes(&mut self, camel: &str) -> Result<Option<Vec<u8>>, Status> {
        let path = join(&self.path, camel);
        match self.raw(camel) {
            None => Ok(None),
            Some(Value::String(s)) => {
                decode_base64(s).map(Some).ok_or_else(|| invalid_value(&path, "TYPE_BYTES", &Value::String(s.clone())))
            }
            Some(v) => Err(invalid_value(&path, "TYPE_BYTES", v)),
        }
    }

    /// An enum by name (`"POST"`) or number (`1`); `names` lists (name, number) pairs.
    pub fn enumeration(&mut self, camel: &str, type_name: &str, names: &[(&str, i32)]) -> Result<Option<i32>, Status> {
        let path = join(&self.path, camel);
        let bad = |v: &Value| invalid_value(&path, &format!("type.googleapis.com/{type_name}"), v);
        match self.raw(camel) {
            None => Ok(None),
            Some(Value::String(s)) => {
                names.iter().find(|(n, _)| n == s).map(|(_, i)| Some(*i)).ok_or_else(|| bad(&Value::String(s.clone())))
            }
            // Enums are open: a number the API lacks reaches the service, which decides.
            Some(Value::Number(n)) => {
                n.as_i64().and_then(|i| i32::try_from(i).ok()).map(Some).ok_or_else(|| bad(&Value::Number(n.clone())))
            }
            Some(v) => Err(bad(v)),
        }
    }

    pub fn object(&mut self, camel: &str) -> Result<Option<Obj<'a>>, Status> {
        let path = join(&self.path, camel);
        match self.raw(camel) {
            None => Ok(None),
            v @ Some(_) => Obj::new(&path, v).map(Some),
        }
    }

    pub fn string_map(&mut self, camel: &str) -> Result<Vec<(String, String)>, Status> {
        let path = join(&self.path, camel);
        match self.raw(camel) {
            None => Ok(Vec::new()),
            Some(Value::Object(m)) => m
                .iter()
                .map(|(k, v)| match v {
                    Value::String(s) => Ok((k.clone(), s.clone())),
                    other => Err(invalid_value(&format!("{path}[{k}]"), "TYPE_STRING", other)),
                })
                .collect(),
            Some(v) => Err(invalid_value(&path, "map<string, string>", v)),
        }
    }

    /// A repeated string field.
    pub fn strings(&mut self, camel: &str) -> Result<Vec<String>, Status> {
        let path = join(&self.path, camel);
        match self.raw(camel) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(invalid_value(&format!("{path}[{i}]"), "TYPE_STRING", other)),
                })
                .collect(),
            Some(v) => Err(invalid_value(&path, "repeated string", v)),
        }
    }

    /// A repeated message field.
    pub fn objects(&mut self, camel: &str) -> Result<Vec<Obj<'a>>, Status> {
        let path = join(&self.path, camel);
        match self.raw(camel) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => {
                items.iter().enumerate().map(|(i, v)| Obj::new(&format!("{path}[{i}]"), Some(v))).collect()
            }
            Some(v) => Err(invalid_value(&path, "repeated message", v)),
        }
    }

    /// A `google.protobuf.FieldMask`, which JSON writes as one comma-separated string.
    pub fn field_mask(&mut self, camel: &str) -> Result<Option<Vec<String>>, Status> {
        Ok(self.string(camel)?.map(|m| split_mask(&m)))
    }

    pub fn is_present(&self) -> bool {
        self.map.is_some()
    }

    /// Refuse fields this message does not have.
    /// Refuse the fields no read asked for, every one of them, one line each, as Google's
    /// JSON parser does.
    pub fn finish(self) -> Result<(), Status> {
        let Some(map) = self.map else { return Ok(()) };
        let at = if self.path.is_empty() { String::new() } else { format!(" at '{}'", self.path) };
        let unknown: Vec<(String, String)> = map
            .keys()
            .filter(|key| !self.used.iter().any(|u| u == *key))
            .map(|key| {
                let text = format!("Invalid JSON payload received. Unknown name \"{key}\"{at}: Cannot find field.");
                (self.path.clone(), text)
            })
            .collect();
        if unknown.is_empty() { Ok(()) } else { Err(parse_error(unknown)) }
    }
}

/// A request body that is not a JSON object.
pub fn not_a_message() -> Status {
    parse_error(vec![(
        String::new(),
        "Invalid JSON payload received. Unknown name \"\": Root element must be a message.".to_string(),
    )])
}

/// The paths of a field mask written as `a,b.c`.
pub fn split_mask(mask: &str) -> Vec<String> {
    mask.split(',').map(str::trim).filter(|p| !p.is_empty()).map(String::from).collect()
}

pub fn decode_base64(s: &str) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD, URL_SAFE};
    let t = s.trim();
    let padded = match t.len() % 4 {
        2 => format!("{t}=="),
        3 => format!("{t}="),
        _ => t.to_string(),
    };
    STANDARD.decode(&padded).or_else(|_| URL_SAFE.decode(&padded)).ok()
}

pub fn encode_base64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// `"3s"`, `"0.100s"`, `"-1.5s"` → microseconds (finer digits are truncated toward zero,
/// except that a negative duration stays negative).
pub fn parse_duration_micros(s: &str) -> Option<i64> {
    let body = s.strip_suffix('s')?;
    let (neg, body) = match body.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, body),
    };
    let (whole, frac) = body.split_once('.').unwrap_or((body, ""));
    if whole.is_empty()
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
        || frac.len() > 9
    {
        return None;
    }
    let secs: i64 = whole.parse().ok()?;
    let mut micros_frac = 0i64;
    for (i, b) in frac.bytes().take(6).enumerate() {
        micros_frac += i64::from(b - b'0') * 10i64.pow(5 - i as u32);
    }
    // Below a microsecond a negative duration rounds away from zero, so it stays negative.
    let below_micro = frac.bytes().skip(6).any(|b| b != b'0');
    let total = secs.checked_mul(1_000_000)?.checked_add(micros_frac)?;
    Some(if neg { -(total + i64::from(below_micro)) } else { total })
}

pub use tasklane_core::clock::format_duration_micros;

pub fn parse_timestamp(s: &str) -> Option<Timestamp> {
    tasklane_core::clock::parse_rfc3339(s)
}

/// RFC 3339 in UTC with 0, 3 or 6 fractional digits, as proto3 JSON writes it.
pub fn format_timestamp(t: Timestamp) -> String {
    tasklane_core::clock::format_rfc3339(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn durations() {
        for (s, us) in [
            ("0s", 0),
            ("3s", 3_000_000),
            ("0.100s", 100_000),
            ("0.1s", 100_000),
            ("-1.5s", -1_500_000),
            ("1.000000001s", 1_000_000),
            // A negative duration under a microsecond stays negative, so it is refused.
            ("-0.000000005s", -1),
            ("3600s", 3_600_000_000),
        ] {
            assert_eq!(parse_duration_micros(s), Some(us), "{s}");
        }
        for bad in ["", "3", "s", "1.2.3s", "abc s", "1,5s", ".5s"] {
            assert_eq!(parse_duration_micros(bad), None, "{bad}");
        }
        assert_eq!(format_duration_micros(100_000), "0.100s");
        assert_eq!(format_duration_micros(3_600_000_000), "3600s");
        assert_eq!(format_duration_micros(1_000_001), "1.000001s");
        assert_eq!(format_duration_micros(-1_500_000), "-1.500s");
    }

    #[test]
    fn timestamps() {
        let t = parse_timestamp("2024-03-01T12:30:00.25+01:00").unwrap();
        assert_eq!(format_timestamp(t), "2024-03-01T11:30:00.250Z");
        assert_eq!(format_timestamp(Timestamp(1)), "1970-01-01T00:00:00.000001Z");
        assert_eq!(format_timestamp(Timestamp(0)), "1970-01-01T00:00:00Z");
        assert!(parse_timestamp("yesterday").is_none());
    }

    #[test]
    fn reader_checks_types_and_unknown_fields() {
        let v = json!({"maxAttempts": "5", "max_doublings": 3, "minBackoff": "0.5s", "bogus": 1});
        let mut o = Obj::new("queue.retry_config", Some(&v)).unwrap();
        assert_eq!(o.i32("maxAttempts").unwrap(), Some(5));
        assert_eq!(o.i32("maxDoublings").unwrap(), Some(3));
        assert_eq!(o.duration_micros("minBackoff").unwrap(), Some(500_000));
        let err = o.finish().unwrap_err();
        assert_eq!(
            err.message,
            "Invalid JSON payload received. Unknown name \"bogus\" at 'queue.retry_config': Cannot find field."
        );

        let v = json!({"maxAttempts": "five"});
        let err = Obj::new("queue.retry_config", Some(&v)).unwrap().i32("maxAttempts").unwrap_err();
        assert_eq!(err.message, "Invalid value at 'queue.retry_config.max_attempts' (TYPE_INT32), \"five\"");

        let v = json!({"httpMethod": 4, "other": "GET"});
        let mut o = Obj::new("task", Some(&v)).unwrap();
        let names = [("POST", 1), ("GET", 2), ("PUT", 4)];
        assert_eq!(o.enumeration("httpMethod", "HttpMethod", &names).unwrap(), Some(4));
        assert_eq!(o.enumeration("other", "HttpMethod", &names).unwrap(), Some(2));
        let v = json!({"m": "FETCH", "n": 99});
        let mut o = Obj::new("t", Some(&v)).unwrap();
        let err = o.enumeration("m", "google.cloud.tasks.v2.HttpMethod", &names).unwrap_err();
        assert_eq!(
            err.message,
            "Invalid value at 't.m' (type.googleapis.com/google.cloud.tasks.v2.HttpMethod), \"FETCH\""
        );
        // Enums are open: an unknown number passes to the service.
        assert_eq!(o.enumeration("n", "HttpMethod", &names).unwrap(), Some(99));
    }

    #[test]
    fn base64_forms() {
        assert_eq!(decode_base64("aGk="), Some(b"hi".to_vec()));
        assert_eq!(decode_base64("aGk"), Some(b"hi".to_vec()));
        assert_eq!(decode_base64("-_8"), Some(vec![0xfb, 0xff]));
        assert_eq!(decode_base64("!!"), None);
    }
}
