//! A `Duration` as whole seconds in configuration files (`grace = 5`).

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};

pub(crate) fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_u64(duration.as_secs())
}

pub(crate) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    u64::deserialize(deserializer).map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use crate::{RateLimit, SlowClientPolicy};
    use std::time::Duration;

    #[test]
    fn policies_read_and_write_as_tagged_tables() {
        let disconnect = SlowClientPolicy::Disconnect {
            grace: Duration::from_secs(5),
        };
        let json = serde_json::to_string(&disconnect).unwrap();
        assert_eq!(json, r#"{"policy":"disconnect","grace":5}"#);
        assert_eq!(
            serde_json::from_str::<SlowClientPolicy>(&json).unwrap(),
            disconnect
        );
        assert_eq!(
            serde_json::from_str::<SlowClientPolicy>(r#"{"policy":"drop"}"#).unwrap(),
            SlowClientPolicy::Drop
        );
        let error = serde_json::from_str::<SlowClientPolicy>(r#"{"policy":"dorp"}"#).unwrap_err();
        let error = error.to_string();
        assert!(error.contains("disconnect") && error.contains("drop"), "{error}");
        let limit: RateLimit = serde_json::from_str(r#"{"per_second":2.5,"burst":5}"#).unwrap();
        assert_eq!(
            limit,
            RateLimit {
                per_second: 2.5,
                burst: 5
            }
        );
        assert!(serde_json::from_str::<RateLimit>(r#"{"per_second":1,"burst":1,"x":1}"#).is_err());
    }
}
