//! How [`Context::send_json`](crate::Context::send_json) writes JSON: a
//! pluggable encoder (Channels' `encode_json`).

/// Writes the JSON that [`Context::send_json`](crate::Context::send_json) sends (Channels'
/// `encode_json`), for a consumer that needs more than serde's defaults:
/// keys sorted or renamed, decimals as strings, a compact float format.
///
/// The encoder gets the value as a [`serde_json::Value`] (its objects in
/// serde_json's map order) and returns the text of the frame. A context
/// without an encoder ([`SerdeJsonEncoder`], the default) writes the value
/// with serde_json directly, with no `Value` in between.
///
/// ```
/// use estuary_core::JsonEncoder;
/// use serde_json::Value;
///
/// /// Writes every non-integer number as a string with two decimals, as a
/// /// Decimal-aware encoder writes money.
/// struct Money;
///
/// fn fix(value: &mut Value) {
///     match value {
///         Value::Number(n) if n.is_f64() => {
///             *value = Value::String(format!("{:.2}", n.as_f64().unwrap_or_default()));
///         }
///         Value::Array(items) => items.iter_mut().for_each(fix),
///         Value::Object(map) => map.values_mut().for_each(fix),
///         _ => {}
///     }
/// }
///
/// impl JsonEncoder for Money {
///     fn encode(&self, mut value: Value) -> Result<String, serde_json::Error> {
///         fix(&mut value);
///         serde_json::to_string(&value)
///     }
/// }
///
/// let text = Money.encode(serde_json::json!({"total": 12.5, "items": 3})).unwrap();
/// assert_eq!(text, r#"{"items":3,"total":"12.50"}"#);
/// ```
pub trait JsonEncoder: Send + Sync + 'static {
    /// The text of the frame for `value`. An error fails the send with
    /// [`ConsumerError::Json`](crate::ConsumerError::Json).
    fn encode(&self, value: serde_json::Value) -> Result<String, serde_json::Error>;
}

/// The default [`JsonEncoder`]: `serde_json::to_string`.
///
/// ```
/// use estuary_core::{JsonEncoder, SerdeJsonEncoder};
///
/// let text = SerdeJsonEncoder.encode(serde_json::json!({"type": "ping"})).unwrap();
/// assert_eq!(text, r#"{"type":"ping"}"#);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct SerdeJsonEncoder;

impl JsonEncoder for SerdeJsonEncoder {
    fn encode(&self, value: serde_json::Value) -> Result<String, serde_json::Error> {
        serde_json::to_string(&value)
    }
}
