//! Shared Signals transmitter endpoints (OpenID SSF 1.0; RFC 8935 push, RFC 8936 poll): the
//! metadata and keys (public), stream management and polling (client-authenticated: a client
//! sees and changes only its own streams). The work is in [`crate::ssf`].

use actix_web::{HttpResponse, delete, get, patch, post, put, web};
use platform::problem::ApiError;
use platform::problem::documented::{TooManyAttempts, Unavailable};
use platform::web::no_store_json;
use serde::{Deserialize, Serialize};
use utoipa::OpenApi;

use super::grants_api::{CallingClient, ClientEndpoint};
use crate::AppState;
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

/// Transmitter configuration metadata (SSF 1.0 section 7).
#[utoipa::path(get, path = "/.well-known/ssf-configuration", tag = "shared-signals",
    responses((status = 200, body = TransmitterConfiguration)))]
#[get("/.well-known/ssf-configuration")]
pub async fn ssf_configuration(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(state.ssf.configuration())
}

/// The public keys Security Event Tokens are signed with (EdDSA; the `kid` in each SET's header
/// names one). After a rotation the previous key stays listed for a while.
#[utoipa::path(get, path = "/ssf/jwks", tag = "shared-signals",
    responses((status = 200, body = JwkSet)))]
#[get("/ssf/jwks")]
pub async fn ssf_jwks(state: web::Data<AppState>) -> HttpResponse {
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

/// One stream (with `stream_id`) or all of the client's streams.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum StreamsRead {
    One(StreamConfiguration),
    All(Vec<StreamConfiguration>),
}

fn required(id: Option<String>) -> Result<String, ApiError> {
    id.ok_or_else(|| ApiError::field("stream_id", "is required"))
}

/// Creates a stream (at most 5 per client). A push endpoint must be https (http on loopback
/// for sandbox clients) and a public address.
#[utoipa::path(post, path = "/ssf/streams", tag = "shared-signals", request_body = CreateStream,
    responses(
        (status = 201, body = StreamConfiguration),
        (status = 400, body = platform::problem::Problem),
        (status = 401, body = platform::problem::Problem),
        (status = 409, description = "The client has 5 streams already", body = platform::problem::Problem),
        TooManyAttempts,
        Unavailable),
    security(("client_basic" = []), ("mutual_tls" = [])))]
#[post("/ssf/streams")]
pub async fn create_stream(
    state: web::Data<AppState>,
    CallingClient(client, _): CallingClient<Ssf>,
    body: web::Json<CreateStream>,
) -> Result<HttpResponse, ApiError> {
    let created = state.ssf.create(&client, body.into_inner()).await?;
    Ok(HttpResponse::Created()
        .insert_header(("cache-control", "no-store"))
        .json(created))
}

/// Reads one stream's configuration, or all of the client's streams.
#[utoipa::path(get, path = "/ssf/streams", tag = "shared-signals", params(StreamQuery),
    responses(
        (status = 200, body = StreamsRead),
        (status = 401, body = platform::problem::Problem),
        (status = 404, description = "Unknown, or another client's stream", body = platform::problem::Problem),
        TooManyAttempts,
        Unavailable),
    security(("client_basic" = []), ("mutual_tls" = [])))]
#[get("/ssf/streams")]
pub async fn read_streams(
    state: web::Data<AppState>,
    q: web::Query<StreamQuery>,
    CallingClient(client, _): CallingClient<Ssf>,
) -> Result<HttpResponse, ApiError> {
    Ok(match q.into_inner().stream_id {
        Some(id) => no_store_json(&StreamsRead::One(state.ssf.get(&client, id).await?)),
        None => no_store_json(&StreamsRead::All(state.ssf.list(&client).await?)),
    })
}

/// Changes the members given (SSF 1.0 section 8.1.1.3).
#[utoipa::path(patch, path = "/ssf/streams", tag = "shared-signals", request_body = UpdateStream,
    responses(
        (status = 200, body = StreamConfiguration),
        (status = 400, body = platform::problem::Problem),
        (status = 401, body = platform::problem::Problem),
        (status = 404, body = platform::problem::Problem),
        TooManyAttempts,
        Unavailable),
    security(("client_basic" = []), ("mutual_tls" = [])))]
#[patch("/ssf/streams")]
pub async fn update_stream(
    state: web::Data<AppState>,
    CallingClient(client, _): CallingClient<Ssf>,
    body: web::Json<UpdateStream>,
) -> Result<HttpResponse, ApiError> {
    Ok(no_store_json(
        &state.ssf.update(&client, body.into_inner(), false).await?,
    ))
}

/// Replaces the stream's configuration (SSF 1.0 section 8.1.1.4).
#[utoipa::path(put, path = "/ssf/streams", tag = "shared-signals", request_body = UpdateStream,
    responses(
        (status = 200, body = StreamConfiguration),
        (status = 400, body = platform::problem::Problem),
        (status = 401, body = platform::problem::Problem),
        (status = 404, body = platform::problem::Problem),
        TooManyAttempts,
        Unavailable),
    security(("client_basic" = []), ("mutual_tls" = [])))]
#[put("/ssf/streams")]
pub async fn replace_stream(
    state: web::Data<AppState>,
    CallingClient(client, _): CallingClient<Ssf>,
    body: web::Json<UpdateStream>,
) -> Result<HttpResponse, ApiError> {
    Ok(no_store_json(
        &state.ssf.update(&client, body.into_inner(), true).await?,
    ))
}

/// Deletes a stream and what it had queued.
#[utoipa::path(delete, path = "/ssf/streams", tag = "shared-signals", params(StreamQuery),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, body = platform::problem::Problem),
        (status = 401, body = platform::problem::Problem),
        (status = 404, body = platform::problem::Problem),
        TooManyAttempts,
        Unavailable),
    security(("client_basic" = []), ("mutual_tls" = [])))]
#[delete("/ssf/streams")]
pub async fn delete_stream(
    state: web::Data<AppState>,
    q: web::Query<StreamQuery>,
    CallingClient(client, _): CallingClient<Ssf>,
) -> Result<HttpResponse, ApiError> {
    state
        .ssf
        .delete(&client, required(q.into_inner().stream_id)?)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// A stream's status.
#[utoipa::path(get, path = "/ssf/status", tag = "shared-signals", params(StreamQuery),
    responses(
        (status = 200, body = StreamStatusView),
        (status = 400, body = platform::problem::Problem),
        (status = 401, body = platform::problem::Problem),
        (status = 404, body = platform::problem::Problem),
        TooManyAttempts,
        Unavailable),
    security(("client_basic" = []), ("mutual_tls" = [])))]
#[get("/ssf/status")]
pub async fn read_status(
    state: web::Data<AppState>,
    q: web::Query<StreamQuery>,
    CallingClient(client, _): CallingClient<Ssf>,
) -> Result<HttpResponse, ApiError> {
    let id = required(q.into_inner().stream_id)?;
    Ok(no_store_json(&state.ssf.status(&client, id).await?))
}

/// Enables, pauses (events queue, then come in order) or disables (events are dropped) a stream.
#[utoipa::path(post, path = "/ssf/status", tag = "shared-signals", request_body = UpdateStatus,
    responses(
        (status = 200, body = StreamStatusView),
        (status = 400, body = platform::problem::Problem),
        (status = 401, body = platform::problem::Problem),
        (status = 404, body = platform::problem::Problem),
        TooManyAttempts,
        Unavailable),
    security(("client_basic" = []), ("mutual_tls" = [])))]
#[post("/ssf/status")]
pub async fn update_status(
    state: web::Data<AppState>,
    CallingClient(client, _): CallingClient<Ssf>,
    body: web::Json<UpdateStatus>,
) -> Result<HttpResponse, ApiError> {
    Ok(no_store_json(
        &state.ssf.set_status(&client, body.into_inner()).await?,
    ))
}

/// Adds a subject (a grant of the client) back to a stream that had it removed. Streams carry
/// every grant of their client by default (`default_subjects: ALL`).
#[utoipa::path(post, path = "/ssf/subjects:add", tag = "shared-signals", request_body = SubjectRequest,
    responses(
        (status = 200, description = "Added"),
        (status = 400, description = "Not a grant of this client", body = platform::problem::Problem),
        (status = 401, body = platform::problem::Problem),
        (status = 404, body = platform::problem::Problem),
        TooManyAttempts,
        Unavailable),
    security(("client_basic" = []), ("mutual_tls" = [])))]
#[post("/ssf/subjects:add")]
pub async fn add_subject(
    state: web::Data<AppState>,
    CallingClient(client, _): CallingClient<Ssf>,
    body: web::Json<SubjectRequest>,
) -> Result<HttpResponse, ApiError> {
    state.ssf.subject(&client, body.into_inner(), true).await?;
    Ok(HttpResponse::Ok().finish())
}

/// Removes a subject (a grant of the client): the stream stops carrying its events.
#[utoipa::path(post, path = "/ssf/subjects:remove", tag = "shared-signals", request_body = SubjectRequest,
    responses(
        (status = 204, description = "Removed"),
        (status = 400, description = "Not a grant of this client", body = platform::problem::Problem),
        (status = 401, body = platform::problem::Problem),
        (status = 404, body = platform::problem::Problem),
        TooManyAttempts,
        Unavailable),
    security(("client_basic" = []), ("mutual_tls" = [])))]
#[post("/ssf/subjects:remove")]
pub async fn remove_subject(
    state: web::Data<AppState>,
    CallingClient(client, _): CallingClient<Ssf>,
    body: web::Json<SubjectRequest>,
) -> Result<HttpResponse, ApiError> {
    state.ssf.subject(&client, body.into_inner(), false).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Asks for a verification event on the stream (at most one every 30 seconds).
#[utoipa::path(post, path = "/ssf/verify", tag = "shared-signals", request_body = VerifyRequest,
    responses(
        (status = 204, description = "A verification event is queued"),
        (status = 400, body = platform::problem::Problem),
        (status = 401, body = platform::problem::Problem),
        (status = 404, body = platform::problem::Problem),
        TooManyAttempts,
        Unavailable),
    security(("client_basic" = []), ("mutual_tls" = [])))]
#[post("/ssf/verify")]
pub async fn verify_stream(
    state: web::Data<AppState>,
    CallingClient(client, _): CallingClient<Ssf>,
    body: web::Json<VerifyRequest>,
) -> Result<HttpResponse, ApiError> {
    state.ssf.verify(&client, body.into_inner()).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Polls a poll stream (RFC 8936): acknowledges what was received, then returns what is due,
/// in order, waiting up to 10 seconds unless `returnImmediately`.
#[utoipa::path(post, path = "/ssf/poll/{stream_id}", tag = "shared-signals", request_body = PollRequest,
    params(("stream_id" = String, Path, description = "Stream id", pattern = "^ssf_[A-Za-z0-9_-]+$", max_length = 64)),
    responses(
        (status = 200, body = PollResponse),
        (status = 400, body = platform::problem::Problem),
        (status = 401, body = platform::problem::Problem),
        (status = 404, body = platform::problem::Problem),
        TooManyAttempts,
        Unavailable),
    security(("client_basic" = []), ("mutual_tls" = [])))]
#[post("/ssf/poll/{stream_id}")]
pub async fn poll_stream(
    state: web::Data<AppState>,
    stream_id: web::Path<String>,
    CallingClient(client, _): CallingClient<Ssf>,
    body: web::Json<PollRequest>,
) -> Result<HttpResponse, ApiError> {
    let stream_id = stream_id.into_inner();
    if stream_id.len() > 64 {
        return Err(ApiError::NotFound("stream"));
    }
    Ok(no_store_json(
        &state
            .ssf
            .poll(&client, stream_id, body.into_inner())
            .await?,
    ))
}
