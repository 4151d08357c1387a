//! Shared Signals transmitter endpoints (OpenID SSF 1.0; RFC 8935 push, RFC 8936 poll): the
//! metadata and keys (public), stream management and polling (client-authenticated: a client
//! sees and changes only its own streams). The work is in [`crate::ssf`].

use std::future::Future;

use actix_web::{HttpResponse, delete, get, patch, post, put, web};
use platform::problem::ApiError;
use platform::problem::Problem;
use platform::web::no_store_json;
use serde::{Deserialize, Serialize};
use utoipa::OpenApi;

use super::grants_api::{CallingClient, ClientEndpoint};
use crate::routes::{Answer, State};
use crate::ssf::TransmitterConfiguration;
use crate::ssf::api::{
    CreateStream, DeliveryRequest, DeliveryView, StreamConfiguration, StreamStatusView, SubjectId,
    SubjectRequest, UpdateStatus, UpdateStream, VerifyRequest,
};
use crate::ssf::poll::{PollRequest, PollResponse, SetError};
use crate::ssf::set::{Jwk, JwkSet};

/// OpenAPI fragment merged into the server's document.
#[derive(Debug, OpenApi)]
#[openapi(
    modifiers(&ClientAuthenticated),
    paths(ssf_configuration, ssf_jwks, create_stream, read_streams, update_stream, replace_stream, delete_stream, read_status, update_status, add_subject, remove_subject, verify_stream, poll_stream),
    components(schemas(TransmitterConfiguration, JwkSet, Jwk, CreateStream, UpdateStream, DeliveryRequest, DeliveryView, StreamConfiguration, StreamsRead, StreamStatusView, UpdateStatus, SubjectId, SubjectRequest, VerifyRequest, PollRequest, PollResponse, SetError)),
    tags(
        (name = "shared-signals", description = "OpenID Shared Signals Framework 1.0 transmitter: Security Event Tokens about a client's grants (and, for resource servers, the revocation feed), by push (RFC 8935) or poll (RFC 8936). Client-authenticated, like the token endpoint"),
    )
)]
pub struct ApiDoc;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(ssf_configuration)
        .service(ssf_jwks)
        .service(create_stream)
        .service(read_streams)
        .service(update_stream)
        .service(replace_stream)
        .service(delete_stream)
        .service(read_status)
        .service(update_status)
        .service(add_subject)
        .service(remove_subject)
        .service(verify_stream)
        .service(poll_stream);
}

/// The stream management and poll endpoints.
#[derive(Debug)]
pub enum Ssf {}

impl ClientEndpoint for Ssf {
    const NAME: &'static str = "ssf";
}

/// Every operation under `/ssf/` but the keys is client-authenticated (HTTP Basic or a TLS
/// client certificate, as at the token endpoint, or a token of the `client_credentials` grant
/// with scope `ssf` for clients whose credentials go in a form): declared here once.
struct ClientAuthenticated;

impl utoipa::Modify for ClientAuthenticated {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{
            HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
        };
        openapi.components.get_or_insert_with(Default::default).add_security_scheme(
            "ssf_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A token of the client_credentials grant with scope=ssf (POST /oauth2/token, \
                         any client authentication method)",
                    ))
                    .build(),
            ),
        );
        let schemes = ["client_basic", "mutual_tls", "ssf_token"];
        for (path, item) in openapi.paths.paths.iter_mut() {
            if !path.starts_with("/ssf/") || path == "/ssf/jwks" {
                continue;
            }
            for op in [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            {
                op.security = Some(
                    schemes
                        .iter()
                        .map(|s| SecurityRequirement::new(*s, Vec::<String>::new()))
                        .collect(),
                );
            }
        }
    }
}

/// What a stream operation may answer besides success.
#[derive(Debug, utoipa::IntoResponses)]
pub enum Refusals {
    #[response(status = 400, description = "Not the documented request")]
    Invalid(Problem),
    #[response(status = 401, description = "Client authentication failed")]
    Unauthenticated(Problem),
    #[response(status = 404, description = "Unknown, or another client's stream")]
    NotFound(Problem),
    #[response(status = 429, description = "Too many attempts (see Retry-After)")]
    TooMany(Problem),
    #[response(
        status = 503,
        description = "Temporarily unavailable (see Retry-After)"
    )]
    Unavailable(Problem),
}

type Client = CallingClient<Ssf>;

/// 200 with `value` as JSON, not to be stored.
async fn json<T: Serialize>(value: impl Future<Output = Result<T, ApiError>>) -> Answer {
    Ok(no_store_json(&value.await?))
}

/// 204 (or `status`) once `done` is.
async fn empty(done: impl Future<Output = Result<(), ApiError>>, status: u16) -> Answer {
    done.await?;
    Ok(
        HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap_or_default())
            .finish(),
    )
}

/// Transmitter configuration metadata (SSF 1.0 section 7).
#[utoipa::path(get, path = "/.well-known/ssf-configuration", tag = "shared-signals",
    responses((status = 200, body = TransmitterConfiguration)))]
#[get("/.well-known/ssf-configuration")]
pub async fn ssf_configuration(state: State) -> HttpResponse {
    HttpResponse::Ok().json(state.ssf.configuration())
}

/// The public keys Security Event Tokens are signed with (EdDSA; the `kid` in each SET's header
/// names one). After a rotation the previous key stays listed for a while.
#[utoipa::path(get, path = "/ssf/jwks", tag = "shared-signals",
    responses((status = 200, body = JwkSet)))]
#[get("/ssf/jwks")]
pub async fn ssf_jwks(state: State) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(("cache-control", "public, max-age=60"))
        .json(crate::ssf::set::jwks(&state.ssf.keys.current()))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct StreamQuery {
    /// The stream (absent when reading: every stream of the client).
    #[param(max_length = 64)]
    stream_id: Option<String>,
}

impl StreamQuery {
    fn required(self) -> Result<String, ApiError> {
        self.stream_id
            .ok_or_else(|| ApiError::field("stream_id", "is required"))
    }
}

/// One stream (with `stream_id`) or all of the client's streams.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum StreamsRead {
    One(StreamConfiguration),
    All(Vec<StreamConfiguration>),
}

/// Creates a stream (at most 5 per client; 409 beyond). A push endpoint must be https (http on
/// loopback for sandbox clients) and a public address.
#[utoipa::path(post, path = "/ssf/streams", tag = "shared-signals", request_body = CreateStream,
    responses((status = 201, body = StreamConfiguration),
        (status = 409, description = "The client has 5 streams already", body = Problem), Refusals))]
#[post("/ssf/streams")]
pub async fn create_stream(state: State, c: Client, body: web::Json<CreateStream>) -> Answer {
    let created = state.ssf.create(&c.0, body.into_inner()).await?;
    Ok(HttpResponse::Created()
        .insert_header(("cache-control", "no-store"))
        .json(created))
}

/// Reads one stream's configuration, or all of the client's streams.
#[utoipa::path(get, path = "/ssf/streams", tag = "shared-signals", params(StreamQuery),
    responses((status = 200, body = StreamsRead), Refusals))]
#[get("/ssf/streams")]
pub async fn read_streams(state: State, q: web::Query<StreamQuery>, c: Client) -> Answer {
    Ok(match q.into_inner().stream_id {
        Some(id) => no_store_json(&StreamsRead::One(state.ssf.get(&c.0, id).await?)),
        None => no_store_json(&StreamsRead::All(state.ssf.list(&c.0).await?)),
    })
}

/// Changes the members given (SSF 1.0 section 8.1.1.3).
#[utoipa::path(patch, path = "/ssf/streams", tag = "shared-signals", request_body = UpdateStream,
    responses((status = 200, body = StreamConfiguration), Refusals))]
#[patch("/ssf/streams")]
pub async fn update_stream(state: State, c: Client, body: web::Json<UpdateStream>) -> Answer {
    json(state.ssf.update(&c.0, body.into_inner(), false)).await
}

/// Replaces the stream's configuration (SSF 1.0 section 8.1.1.4).
#[utoipa::path(put, path = "/ssf/streams", tag = "shared-signals", request_body = UpdateStream,
    responses((status = 200, body = StreamConfiguration), Refusals))]
#[put("/ssf/streams")]
pub async fn replace_stream(state: State, c: Client, body: web::Json<UpdateStream>) -> Answer {
    json(state.ssf.update(&c.0, body.into_inner(), true)).await
}

/// Deletes a stream and what it had queued.
#[utoipa::path(delete, path = "/ssf/streams", tag = "shared-signals", params(StreamQuery),
    responses((status = 204, description = "Deleted"), Refusals))]
#[delete("/ssf/streams")]
pub async fn delete_stream(state: State, q: web::Query<StreamQuery>, c: Client) -> Answer {
    empty(state.ssf.delete(&c.0, q.into_inner().required()?), 204).await
}

/// A stream's status.
#[utoipa::path(get, path = "/ssf/status", tag = "shared-signals", params(StreamQuery),
    responses((status = 200, body = StreamStatusView), Refusals))]
#[get("/ssf/status")]
pub async fn read_status(state: State, q: web::Query<StreamQuery>, c: Client) -> Answer {
    json(state.ssf.status(&c.0, q.into_inner().required()?)).await
}

/// Enables, pauses (events queue, then come in order) or disables (events are dropped) a stream.
#[utoipa::path(post, path = "/ssf/status", tag = "shared-signals", request_body = UpdateStatus,
    responses((status = 200, body = StreamStatusView), Refusals))]
#[post("/ssf/status")]
pub async fn update_status(state: State, c: Client, body: web::Json<UpdateStatus>) -> Answer {
    json(state.ssf.set_status(&c.0, body.into_inner())).await
}

/// Adds a subject (a grant of the client; another's is 400) back to a stream that had it
/// removed. Streams carry every grant of their client by default (`default_subjects: ALL`).
#[utoipa::path(post, path = "/ssf/subjects:add", tag = "shared-signals", request_body = SubjectRequest,
    responses((status = 200, description = "Added"), Refusals))]
#[post("/ssf/subjects:add")]
pub async fn add_subject(state: State, c: Client, body: web::Json<SubjectRequest>) -> Answer {
    empty(state.ssf.subject(&c.0, body.into_inner(), true), 200).await
}

/// Removes a subject (a grant of the client): the stream stops carrying its events.
#[utoipa::path(post, path = "/ssf/subjects:remove", tag = "shared-signals", request_body = SubjectRequest,
    responses((status = 204, description = "Removed"), Refusals))]
#[post("/ssf/subjects:remove")]
pub async fn remove_subject(state: State, c: Client, body: web::Json<SubjectRequest>) -> Answer {
    empty(state.ssf.subject(&c.0, body.into_inner(), false), 204).await
}

/// Asks for a verification event on the stream (at most one every 30 seconds; 429 sooner).
#[utoipa::path(post, path = "/ssf/verify", tag = "shared-signals", request_body = VerifyRequest,
    responses((status = 204, description = "A verification event is queued"), Refusals))]
#[post("/ssf/verify")]
pub async fn verify_stream(state: State, c: Client, body: web::Json<VerifyRequest>) -> Answer {
    empty(state.ssf.verify(&c.0, body.into_inner()), 204).await
}

/// Polls a poll stream (RFC 8936): acknowledges what was received, then returns what is due,
/// in order, waiting up to 10 seconds unless `returnImmediately`.
#[utoipa::path(post, path = "/ssf/poll/{stream_id}", tag = "shared-signals", request_body = PollRequest,
    params(("stream_id" = String, Path, description = "Stream id", pattern = "^ssf_[A-Za-z0-9_-]+$", max_length = 64)),
    responses((status = 200, body = PollResponse), Refusals))]
#[post("/ssf/poll/{stream_id}")]
pub async fn poll_stream(
    state: State,
    stream_id: web::Path<String>,
    c: Client,
    body: web::Json<PollRequest>,
) -> Answer {
    let stream_id = stream_id.into_inner();
    if stream_id.len() > 64 {
        return Err(ApiError::NotFound("stream"));
    }
    json(state.ssf.poll(&c.0, stream_id, body.into_inner())).await
}
