//! The `webhooks` section: what the service POSTs to a client's webhook URL, one entry per event
//! type (`platform::webhooks::EVENT_TYPES`). The bodies are built in `platform::webhooks::enqueue`
//! (envelope) and by each event's writer (`data`); the test
//! `webhooks::every_event_type_is_documented` holds the two together.

use chrono::{DateTime, Utc};
use utoipa::openapi::path::{Operation, OperationBuilder, ParameterBuilder, ParameterIn};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Required, ResponseBuilder};
use utoipa::{PartialSchema, ToSchema};

/// `data` of `grant.revoked` and `grant.expired`: the grant ended; its tokens stop working and
/// the revocation feed lists them.
#[derive(Debug, ToSchema)]
pub struct GrantEnded {
    pub client_id: String,
    pub grant_id: String,
    /// `revoked` or `expired`.
    pub status: String,
    /// Who ended it: `customer`, `client`, `staff`, `dormancy`, `expiry`, `security`.
    pub revoked_by: String,
    pub reason: String,
    pub at: DateTime<Utc>,
}

/// `data` of `grant.expiring`: the consent reaches its end date soon.
#[derive(Debug, ToSchema)]
pub struct GrantExpiring {
    pub client_id: String,
    pub grant_id: String,
    pub expires_at: DateTime<Utc>,
}

/// `data` of `grant.dormancy_warning`: the app has not used the grant for a long time; it is
/// revoked at `revoke_after` unless the app uses it (or the customer extends it) before then.
#[derive(Debug, ToSchema)]
pub struct GrantDormancyWarning {
    pub client_id: String,
    pub grant_id: String,
    pub last_used_at: DateTime<Utc>,
    pub revoke_after: DateTime<Utc>,
}

/// `data` of `grant.extended`: the customer re-confirmed the grant from their dashboard.
#[derive(Debug, ToSchema)]
pub struct GrantExtended {
    pub client_id: String,
    pub grant_id: String,
    pub expires_at: DateTime<Utc>,
    pub previous_expires_at: DateTime<Utc>,
}

/// `data` of `client.suspended`: staff suspended the client (four-eyes); its grants were
/// revoked.
#[derive(Debug, ToSchema)]
pub struct ClientSuspended {
    pub client_id: String,
    /// `suspended`.
    pub status: String,
    pub grants_revoked: u64,
    pub at: DateTime<Utc>,
}

/// The event types, the schema of their `data`, and what they mean.
pub const EVENTS: [(&str, &str, &str); 6] = [
    ("grant.revoked", "GrantEnded", "A grant was revoked"),
    (
        "grant.expired",
        "GrantEnded",
        "A grant reached its end date",
    ),
    ("grant.expiring", "GrantExpiring", "A grant ends soon"),
    (
        "grant.dormancy_warning",
        "GrantDormancyWarning",
        "A grant will be revoked for dormancy",
    ),
    (
        "grant.extended",
        "GrantExtended",
        "The customer extended a grant",
    ),
    (
        "client.suspended",
        "ClientSuspended",
        "The client was suspended",
    ),
];

/// The data schemas, to register as components.
pub fn data_schemas() -> Vec<(String, RefOr<Schema>)> {
    vec![
        (GrantEnded::name().into(), GrantEnded::schema()),
        (GrantExpiring::name().into(), GrantExpiring::schema()),
        (
            GrantDormancyWarning::name().into(),
            GrantDormancyWarning::schema(),
        ),
        (GrantExtended::name().into(), GrantExtended::schema()),
        (ClientSuspended::name().into(), ClientSuspended::schema()),
    ]
}

/// The `webhooks` object: one `post` per event type, with its signed envelope.
pub fn webhooks() -> serde_json::Value {
    let string = || ObjectBuilder::new().schema_type(Type::String);
    let header = |name: &str, description: &str| {
        ParameterBuilder::new()
            .name(name)
            .parameter_in(ParameterIn::Header)
            .required(Required::True)
            .description(Some(description))
            .schema(Some(string()))
            .build()
    };
    let mut out = serde_json::Map::new();
    for (event, data, summary) in EVENTS {
        let envelope = ObjectBuilder::new()
            .description(Some(format!(
                "The `{event}` event (Standard Webhooks envelope)."
            )))
            .property(
                "id",
                string().description(Some(
                    "The event id, also in `webhook-id`: deduplicate on it",
                )),
            )
            .property("type", string().enum_values(Some([event])))
            .property(
                "timestamp",
                string().format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                    utoipa::openapi::KnownFormat::DateTime,
                ))),
            )
            .property("data", Ref::from_schema_name(data))
            .required("id")
            .required("type")
            .required("timestamp")
            .required("data");
        let operation: Operation = OperationBuilder::new()
            .summary(Some(summary))
            .operation_id(Some(format!("on_{}", event.replace('.', "_"))))
            .tag("webhooks")
            .description(Some(
                "Sent at least once to the client's webhook URL, signed per Standard Webhooks: \
                 verify `webhook-signature` (HMAC-SHA256 with the client's `whsec_` secret over \
                 `{webhook-id}.{webhook-timestamp}.{body}`, constant-time), refuse timestamps \
                 more than five minutes from your clock, and deduplicate on `webhook-id`.",
            ))
            .parameter(header("webhook-id", "The event id, stable across retries"))
            .parameter(header("webhook-timestamp", "Unix seconds of this attempt"))
            .parameter(header("webhook-signature", "`v1,<base64 HMAC-SHA256>`"))
            .request_body(Some(
                RequestBodyBuilder::new()
                    .required(Some(Required::True))
                    .content(
                        "application/json",
                        ContentBuilder::new().schema(Some(envelope)).build(),
                    )
                    .build(),
            ))
            .response(
                "2XX",
                ResponseBuilder::new().description(
                    "Received. Any other answer, or none in time, is retried with backoff.",
                ),
            )
            .build();
        out.insert(
            event.to_owned(),
            serde_json::json!({ "post": serde_json::to_value(operation).unwrap_or_default() }),
        );
    }
    serde_json::Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_type_is_documented() {
        let documented: Vec<&str> = EVENTS.iter().map(|(e, ..)| *e).collect();
        assert_eq!(documented, platform::webhooks::EVENT_TYPES);
        let schemas: Vec<String> = data_schemas().into_iter().map(|(n, _)| n).collect();
        for (event, data, _) in EVENTS {
            assert!(schemas.iter().any(|s| s == data), "{event}: {data}");
        }
        let hooks = webhooks();
        for event in documented {
            let body = &hooks[event]["post"]["requestBody"]["content"]["application/json"];
            assert_eq!(body["schema"]["properties"]["type"]["enum"][0], event);
        }
    }
}
