//! The OpenAPI document (generated from the handlers' `#[utoipa::path]` and the models'
//! `ToSchema`) and the Swagger UI at `/docs`.
//!
//! The UI's files are compiled into the binary (utoipa-swagger-ui's `vendored` feature: the
//! Swagger UI release ships inside the crate, no download at build time, no CDN at run time)
//! and served from `/docs/`; its spec comes from `/docs/openapi.json`, a public copy of the
//! document that `/api/v1/openapi.json` serves behind authentication.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use utoipa::openapi::schema::AdditionalProperties;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{Modify, OpenApi};
use utoipa_swagger_ui::Config;

use crate::error::{ApiError, ErrorBody};
use crate::extract::ApiPath;
use crate::state::ApiState;
use crate::{archive, devices, records, system};

/// The name of the bearer security scheme.
const BEARER: &str = "bearer";

/// Adds the bearer security scheme the `/api/v1` paths refer to.
struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("svoi_<id>_<secret>")
                    .description(Some(
                        "A token from `svoi token create`, as `Authorization: Bearer <token>`",
                    ))
                    .build(),
            ),
        );
    }
}

/// Makes the record item's extra fields plainly `additionalProperties: true`: the derive
/// renders the flattened map as a described but otherwise empty schema, which means the same
/// but reads less clearly.
struct FreeFormRecordItem;

impl Modify for FreeFormRecordItem {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let item = doc
            .components
            .as_mut()
            .and_then(|c| c.schemas.get_mut("RecordItem"));
        if let Some(RefOr::T(Schema::Object(o))) = item {
            o.additional_properties = Some(Box::new(AdditionalProperties::FreeForm(true)));
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "SVOI API",
        description = "Read access to what SVOI received from Navtelecom trackers: devices, \
                       records, alarm events, the raw frame archive and decode errors; plus \
                       health, readiness and metrics."
    ),
    paths(
        system::health,
        system::ready,
        system::metrics,
        system::status,
        devices::list,
        devices::detail,
        records::records,
        records::events,
        archive::raw_frames,
        archive::decode_errors,
        openapi_json,
    ),
    components(schemas(ErrorBody)),
    modifiers(&BearerScheme, &FreeFormRecordItem),
    tags(
        (name = "system", description = "Health, readiness, metrics and status"),
        (name = "devices", description = "Devices and what they recorded"),
        (name = "archive", description = "Every frame as received, and decode failures"),
    )
)]
struct ApiDoc;

/// The OpenAPI 3.1 document of the API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc
}

/// The OpenAPI document, serialised once when the router is built (or why it could not be).
#[derive(Clone)]
pub(crate) struct Spec(Result<Bytes, Arc<str>>);

impl Spec {
    /// Serialises [`openapi`].
    pub(crate) fn new() -> Spec {
        Spec(
            openapi()
                .to_json()
                .map(Bytes::from)
                .map_err(|e| Arc::from(format!("openapi document to json: {e}"))),
        )
    }

    /// The document as a JSON response.
    fn response(&self) -> Response {
        match &self.0 {
            Ok(text) => (
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )],
                text.clone(),
            )
                .into_response(),
            Err(e) => ApiError::Internal(e.to_string()).into_response(),
        }
    }
}

/// The OpenAPI document of this API (the same as the public `/docs/openapi.json`).
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "system",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The OpenAPI document", content_type = "application/json", body = Object),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database busy (checking the token)", body = ErrorBody),
    )
)]
async fn openapi_json(spec: Spec) -> Response {
    spec.response()
}

/// The handler serving `spec` (or the error that prevented building it).
pub(crate) fn spec_route(spec: Spec) -> axum::routing::MethodRouter<ApiState> {
    get(move || openapi_json(spec.clone()))
}

/// The Swagger UI routes: `/docs` redirects to `/docs/`, which serves the UI; its assets are
/// under `/docs/`, the document at `/docs/openapi.json`.
pub(crate) fn router(spec: Spec) -> Router<ApiState> {
    let config = Arc::new(
        Config::from("/docs/openapi.json")
            // The default validator badge loads an image from validator.swagger.io.
            .validator_url("none"),
    );
    let index_config = config.clone();
    Router::new()
        .route("/docs", get(|| async { Redirect::to("/docs/") }))
        .route(
            "/docs/",
            get(move || asset(String::new(), index_config.clone())),
        )
        .route("/docs/openapi.json", spec_route(spec))
        .route(
            "/docs/{*file}",
            get(move |ApiPath(file): ApiPath<String>| asset(file, config.clone())),
        )
}

/// One Swagger UI file, or a JSON 404.
async fn asset(file: String, config: Arc<Config<'static>>) -> Response {
    match utoipa_swagger_ui::serve(&file, config) {
        Ok(Some(f)) => {
            let mut res = (
                [(header::CONTENT_TYPE, f.content_type)],
                f.bytes.into_owned(),
            )
                .into_response();
            if f.gzpipped {
                res.headers_mut()
                    .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            }
            res
        }
        Ok(None) => ApiError::NotFound(format!("no documentation file {file:?}")).into_response(),
        Err(e) => ApiError::Internal(format!("swagger ui file {file:?}: {e}")).into_response(),
    }
}
