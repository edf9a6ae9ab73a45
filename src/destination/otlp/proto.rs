//! The OTLP logs messages eventspool sends and the reply it reads, declared by hand
//! with the field numbers of opentelemetry-proto's `.proto` files (`logs/v1/logs.proto`,
//! `common/v1/common.proto`, `resource/v1/resource.proto`,
//! `collector/logs/v1/logs_service.proto`) so no build script or `protoc` is needed.
//! Only the fields eventspool sets are declared: a field left out is never sent, and
//! a receiver treats it as its default.
//!
//! `prost` does the wire encoding; its `Message` impls are written here rather than
//! derived, because `prost-derive` would add a second `syn`, `anyhow` and
//! `itertools` to every host's build for a dozen small messages. Each message lists
//! its fields once ([`Fields`]), and that one list both encodes and measures it, so
//! the length prefixes cannot disagree with the bytes.
//!
//! The same structs serialize to OTLP/JSON: lowerCamelCase names, 64-bit integers as
//! decimal strings, enums as their numbers, fields at their default value left out.

use prost::bytes::{Buf, BufMut};
use prost::encoding::{self, DecodeContext, WireType};
use prost::{DecodeError, Message};
use serde::{Deserialize, Serialize, Serializer};

/// `ExportLogsServiceRequest` (collector/logs/v1): the body of `POST /v1/logs`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ExportLogsServiceRequest {
    pub resource_logs: Vec<ResourceLogs>,
}

/// `ResourceLogs` (logs/v1): the records of one resource.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ResourceLogs {
    pub resource: Option<Resource>,
    pub scope_logs: Vec<ScopeLogs>,
}

/// `Resource` (resource/v1).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Resource {
    pub attributes: Vec<KeyValue>,
}

/// `ScopeLogs` (logs/v1): the records one instrumentation scope produced.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ScopeLogs {
    pub scope: Option<InstrumentationScope>,
    pub log_records: Vec<LogRecord>,
}

/// `InstrumentationScope` (common/v1).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct InstrumentationScope {
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub version: String,
}

/// `LogRecord` (logs/v1). Field 4 is reserved; 12 (`event_name`) is the current
/// schema's name for what happened.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct LogRecord {
    #[serde(serialize_with = "as_decimal", skip_serializing_if = "is_zero")]
    pub time_unix_nano: u64,
    #[serde(serialize_with = "as_decimal", skip_serializing_if = "is_zero")]
    pub observed_time_unix_nano: u64,
    /// A `SeverityNumber` (9 is `SEVERITY_NUMBER_INFO`).
    #[serde(skip_serializing_if = "is_zero_i32")]
    pub severity_number: i32,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub severity_text: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub attributes: Vec<KeyValue>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub event_name: String,
}

/// `SEVERITY_NUMBER_INFO`.
pub(crate) const SEVERITY_INFO: i32 = 9;

/// `KeyValue` (common/v1).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct KeyValue {
    pub key: String,
    pub value: Option<AnyValue>,
}

/// `AnyValue` (common/v1): one of its typed fields, or none (an empty value).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub(crate) struct AnyValue {
    #[serde(flatten)]
    pub value: Option<Value>,
}

/// The `value` oneof of `AnyValue`; in JSON, an object with the one field set
/// (`stringValue`, `intValue`, …). Field 7 (`bytes_value`) and 8 (a profiles-only
/// string index) are never sent.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) enum Value {
    #[serde(rename = "stringValue")]
    String(String),
    #[serde(rename = "boolValue")]
    Bool(bool),
    #[serde(rename = "intValue", serialize_with = "as_decimal")]
    Int(i64),
    #[serde(rename = "doubleValue")]
    Double(f64),
    #[serde(rename = "arrayValue")]
    Array(ArrayValue),
    #[serde(rename = "kvlistValue")]
    Kvlist(KeyValueList),
}

/// `ArrayValue` (common/v1).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub(crate) struct ArrayValue {
    pub values: Vec<AnyValue>,
}

/// `KeyValueList` (common/v1).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub(crate) struct KeyValueList {
    pub values: Vec<KeyValue>,
}

/// `ExportLogsServiceResponse` (collector/logs/v1): a collector's 2xx reply.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ExportLogsServiceResponse {
    #[serde(default)]
    pub partial_success: Option<ExportLogsPartialSuccess>,
}

/// `ExportLogsPartialSuccess`: how many records the collector refused, and why.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ExportLogsPartialSuccess {
    #[serde(default, deserialize_with = "int64_from_json")]
    pub rejected_log_records: i64,
    #[serde(default, deserialize_with = "string_or_null")]
    pub error_message: String,
}

/// OTLP/JSON writes 64-bit integers as decimal strings (JavaScript cannot hold them).
fn as_decimal<T: std::fmt::Display, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

fn is_zero_i32(v: &i32) -> bool {
    *v == 0
}

/// A JSON int64 as receivers must accept it: a decimal string or a number (or null).
fn int64_from_json<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Int {
        Number(i64),
        Text(String),
    }
    match Option::<Int>::deserialize(d)? {
        None => Ok(0),
        Some(Int::Number(n)) => Ok(n),
        Some(Int::Text(t)) => t.trim().parse().map_err(serde::de::Error::custom),
    }
}

fn string_or_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
}

/// Where a message's fields go: into a buffer, or into a byte count.
trait Wire {
    fn string(&mut self, tag: u32, v: &str);
    fn bool(&mut self, tag: u32, v: bool);
    fn int32(&mut self, tag: u32, v: i32);
    fn int64(&mut self, tag: u32, v: i64);
    fn fixed64(&mut self, tag: u32, v: u64);
    fn double(&mut self, tag: u32, v: f64);
    fn message<M: Message>(&mut self, tag: u32, v: &M);
}

/// Writes fields with prost's encoders.
struct Put<'a, B: BufMut>(&'a mut B);

impl<B: BufMut> Wire for Put<'_, B> {
    fn string(&mut self, tag: u32, v: &str) {
        // `encoding::string::encode`, for a `&str`.
        encoding::encode_key(tag, WireType::LengthDelimited, self.0);
        encoding::encode_varint(v.len() as u64, self.0);
        self.0.put_slice(v.as_bytes());
    }
    fn bool(&mut self, tag: u32, v: bool) {
        encoding::bool::encode(tag, &v, self.0);
    }
    fn int32(&mut self, tag: u32, v: i32) {
        encoding::int32::encode(tag, &v, self.0);
    }
    fn int64(&mut self, tag: u32, v: i64) {
        encoding::int64::encode(tag, &v, self.0);
    }
    fn fixed64(&mut self, tag: u32, v: u64) {
        encoding::fixed64::encode(tag, &v, self.0);
    }
    fn double(&mut self, tag: u32, v: f64) {
        encoding::double::encode(tag, &v, self.0);
    }
    fn message<M: Message>(&mut self, tag: u32, v: &M) {
        encoding::message::encode(tag, v, self.0);
    }
}

/// Adds up what [`Put`] would write.
struct Len(usize);

impl Wire for Len {
    fn string(&mut self, tag: u32, v: &str) {
        self.0 += encoding::key_len(tag) + encoding::encoded_len_varint(v.len() as u64) + v.len();
    }
    fn bool(&mut self, tag: u32, v: bool) {
        self.0 += encoding::bool::encoded_len(tag, &v);
    }
    fn int32(&mut self, tag: u32, v: i32) {
        self.0 += encoding::int32::encoded_len(tag, &v);
    }
    fn int64(&mut self, tag: u32, v: i64) {
        self.0 += encoding::int64::encoded_len(tag, &v);
    }
    fn fixed64(&mut self, tag: u32, v: u64) {
        self.0 += encoding::fixed64::encoded_len(tag, &v);
    }
    fn double(&mut self, tag: u32, v: f64) {
        self.0 += encoding::double::encoded_len(tag, &v);
    }
    fn message<M: Message>(&mut self, tag: u32, v: &M) {
        self.0 += encoding::message::encoded_len(tag, v);
    }
}

/// A message's fields in field-number order. Proto3 leaves a field at its default
/// value out, except inside a oneof, where being set is the information.
trait Fields {
    fn fields(&self, w: &mut impl Wire);
}

/// `prost::Message` for messages eventspool only sends: encoded from [`Fields`];
/// decoding skips every field (nothing here ever decodes them).
macro_rules! sent_messages {
    ($($t:ty),* $(,)?) => {$(
        impl Message for $t {
            fn encode_raw(&self, buf: &mut impl BufMut) {
                self.fields(&mut Put(buf));
            }
            fn merge_field(
                &mut self,
                tag: u32,
                wire_type: WireType,
                buf: &mut impl Buf,
                ctx: DecodeContext,
            ) -> Result<(), DecodeError> {
                encoding::skip_field(wire_type, tag, buf, ctx)
            }
            fn encoded_len(&self) -> usize {
                let mut len = Len(0);
                self.fields(&mut len);
                len.0
            }
            fn clear(&mut self) {
                *self = Self::default();
            }
        }
    )*};
}

sent_messages!(
    ExportLogsServiceRequest,
    ResourceLogs,
    Resource,
    ScopeLogs,
    InstrumentationScope,
    LogRecord,
    KeyValue,
    AnyValue,
    ArrayValue,
    KeyValueList,
);

impl Fields for ExportLogsServiceRequest {
    fn fields(&self, w: &mut impl Wire) {
        self.resource_logs.iter().for_each(|m| w.message(1, m));
    }
}

impl Fields for ResourceLogs {
    fn fields(&self, w: &mut impl Wire) {
        if let Some(m) = &self.resource {
            w.message(1, m);
        }
        self.scope_logs.iter().for_each(|m| w.message(2, m));
    }
}

impl Fields for Resource {
    fn fields(&self, w: &mut impl Wire) {
        self.attributes.iter().for_each(|m| w.message(1, m));
    }
}

impl Fields for ScopeLogs {
    fn fields(&self, w: &mut impl Wire) {
        if let Some(m) = &self.scope {
            w.message(1, m);
        }
        self.log_records.iter().for_each(|m| w.message(2, m));
    }
}

impl Fields for InstrumentationScope {
    fn fields(&self, w: &mut impl Wire) {
        if !self.name.is_empty() {
            w.string(1, &self.name);
        }
        if !self.version.is_empty() {
            w.string(2, &self.version);
        }
    }
}

impl Fields for LogRecord {
    fn fields(&self, w: &mut impl Wire) {
        if self.time_unix_nano != 0 {
            w.fixed64(1, self.time_unix_nano);
        }
        if self.severity_number != 0 {
            w.int32(2, self.severity_number);
        }
        if !self.severity_text.is_empty() {
            w.string(3, &self.severity_text);
        }
        self.attributes.iter().for_each(|m| w.message(6, m));
        if self.observed_time_unix_nano != 0 {
            w.fixed64(11, self.observed_time_unix_nano);
        }
        if !self.event_name.is_empty() {
            w.string(12, &self.event_name);
        }
    }
}

impl Fields for KeyValue {
    fn fields(&self, w: &mut impl Wire) {
        if !self.key.is_empty() {
            w.string(1, &self.key);
        }
        if let Some(m) = &self.value {
            w.message(2, m);
        }
    }
}

impl Fields for AnyValue {
    fn fields(&self, w: &mut impl Wire) {
        match &self.value {
            None => {}
            Some(Value::String(v)) => w.string(1, v),
            Some(Value::Bool(v)) => w.bool(2, *v),
            Some(Value::Int(v)) => w.int64(3, *v),
            Some(Value::Double(v)) => w.double(4, *v),
            Some(Value::Array(m)) => w.message(5, m),
            Some(Value::Kvlist(m)) => w.message(6, m),
        }
    }
}

impl Fields for ArrayValue {
    fn fields(&self, w: &mut impl Wire) {
        self.values.iter().for_each(|m| w.message(1, m));
    }
}

impl Fields for KeyValueList {
    fn fields(&self, w: &mut impl Wire) {
        self.values.iter().for_each(|m| w.message(1, m));
    }
}

/// The reply is only decoded; fields it does not know are skipped, as protobuf wants.
impl Message for ExportLogsServiceResponse {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        if let Some(m) = &self.partial_success {
            encoding::message::encode(1, m, buf);
        }
    }
    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        match tag {
            1 => encoding::message::merge(
                wire_type,
                self.partial_success.get_or_insert_with(Default::default),
                buf,
                ctx,
            ),
            _ => encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }
    fn encoded_len(&self) -> usize {
        self.partial_success
            .as_ref()
            .map_or(0, |m| encoding::message::encoded_len(1, m))
    }
    fn clear(&mut self) {
        *self = Self::default();
    }
}

impl Message for ExportLogsPartialSuccess {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        if self.rejected_log_records != 0 {
            encoding::int64::encode(1, &self.rejected_log_records, buf);
        }
        if !self.error_message.is_empty() {
            encoding::string::encode(2, &self.error_message, buf);
        }
    }
    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        match tag {
            1 => encoding::int64::merge(wire_type, &mut self.rejected_log_records, buf, ctx),
            2 => encoding::string::merge(wire_type, &mut self.error_message, buf, ctx),
            _ => encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }
    fn encoded_len(&self) -> usize {
        let mut len = 0;
        if self.rejected_log_records != 0 {
            len += encoding::int64::encoded_len(1, &self.rejected_log_records);
        }
        if !self.error_message.is_empty() {
            len += encoding::string::encoded_len(2, &self.error_message);
        }
        len
    }
    fn clear(&mut self) {
        *self = Self::default();
    }
}
