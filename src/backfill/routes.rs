//! `/v1/backfill`: start, list, follow, resume and roll back jobs; verify coverage (admin
//! only).

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::sources::{self, MAX_SOURCES, SourceError};
use super::{
    Backfill, BackfillError, Counts, Job, JobRequest, JobState, RollbackOutcome, Verification,
};
use crate::http::{Admin, ApiError, AppState, JsonBody, PageLimit, Path, Problem, Query};
use crate::session_id::{Name, SessionId, check_name};
use crate::store::JobCursor;
use crate::timestamp::Timestamp;

/// A data directory as `sources` and `?source=` name it (a path on the server).
#[derive(ToSchema)]
#[schema(value_type = String, min_length = 1)]
#[allow(dead_code)] // only its schema is used
struct SourceDir(String);

/// Explicit ids accepted in one request (larger lists: `gatehouse backfill --ids-file`).
pub const MAX_EXPLICIT_IDS: usize = 10_000;

/// The backfill routes.
pub fn routes() -> OpenApiRouter<AppState> {
    let mut router = OpenApiRouter::new()
        .routes(routes!(list_jobs, start_job))
        .routes(routes!(verify))
        .routes(routes!(get_job))
        .routes(routes!(resume_job))
        .routes(routes!(rollback_job));
    start_job_rules(router.get_openapi_mut());
    router
}

/// Adds to the published `StartJob` what [`start_job`] checks and utoipa's attributes cannot
/// say: at least one source or session id, and no source named twice.
fn start_job_rules(openapi: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{RefOr, schema::Schema};
    let schemas = openapi.components.as_mut().map(|c| &mut c.schemas);
    if let Some(RefOr::T(Schema::Object(start_job))) =
        schemas.and_then(|schemas| schemas.get_mut("StartJob"))
    {
        if let Some(RefOr::T(Schema::Array(sources))) = start_job.properties.get_mut("sources") {
            sources.unique_items = true;
        }
        let non_empty = |field: &str| json!({ "required": [field], "properties": { field: { "minItems": 1 } } });
        start_job
            .extensions
            .get_or_insert_with(Default::default)
            .insert(
                "anyOf".into(),
                json!([non_empty("sources"), non_empty("session_ids")]),
            );
    }
}

impl From<BackfillError> for ApiError {
    fn from(e: BackfillError) -> Self {
        match e {
            BackfillError::NotFound(_) => ApiError::NotFound(e.to_string()),
            BackfillError::Conflict(why) => ApiError::conflict("job-state", why, json!({})),
            BackfillError::Store(e) => e.into(),
        }
    }
}

impl From<SourceError> for ApiError {
    fn from(e: SourceError) -> Self {
        ApiError::InvalidRequest(e.to_string())
    }
}

/// Body of `POST /v1/backfill`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartJob {
    /// Count only: write no owner.
    pub dry_run: bool,
    /// The owner given to sessions that have none.
    #[schema(value_type = Name)]
    pub default_owner: String,
    /// Data directories (holding `chats/` and/or `conversation_transcripts/`) inside the
    /// allowed roots: existing directories on the server's disk, so 400 for any other; up to
    /// 100, each named once (as resolved: `/data/a` and `/data/./a` are one, a 400).
    #[serde(default)]
    #[schema(inline, value_type = Vec<SourceDir>, max_items = 100)]
    pub sources: Vec<String>,
    /// Explicit session ids (up to 10,000).
    #[serde(default)]
    #[schema(value_type = Vec<SessionId>, max_items = 10000)]
    pub session_ids: Vec<String>,
}

fn accepted(job: &Job) -> Response {
    let location = format!("/v1/backfill/{}", job.job_id);
    (
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(job.clone()),
    )
        .into_response()
}

/// Query of `GET /v1/backfill`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct JobsQuery {
    /// Jobs at most (1-1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
    /// Only jobs older than this place (the `next_before` of the previous page).
    pub before: Option<String>,
}

/// A job as the listing shows it: where it stands and its counts, without the lists of its
/// record (`sources`, `errors`, the rollback's `kept_sample`), which can make a record
/// hundreds of kilobytes; `GET /v1/backfill/{job_id}` has them.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JobSummary {
    /// The job id.
    pub job_id: String,
    /// Where it stands (a running job whose record stopped moving is `interrupted`).
    pub state: JobState,
    /// Whether it only counts.
    pub dry_run: bool,
    /// The owner given to unowned sessions.
    pub default_owner: String,
    /// Who started it.
    pub actor: String,
    /// When it started.
    pub created_at: Timestamp,
    /// When its record last moved.
    pub updated_at: Timestamp,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
    /// How many sources it reads.
    pub source_count: u64,
    /// How many ids were given explicitly.
    pub explicit_ids: u64,
    /// Counts so far (`errors`: how many errors, all of them).
    pub counts: Counts,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

impl From<&Job> for JobSummary {
    fn from(job: &Job) -> Self {
        Self {
            job_id: job.job_id.clone(),
            state: job.state,
            dry_run: job.dry_run,
            default_owner: job.default_owner.clone(),
            actor: job.actor.clone(),
            created_at: job.created_at,
            updated_at: job.updated_at,
            finished_at: job.finished_at,
            source_count: job.sources.len() as u64,
            explicit_ids: job.explicit_ids,
            counts: job.counts.clone(),
            failure: job.failure.clone(),
        }
    }
}

/// A page of backfill jobs.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct JobPage {
    /// A summary of each job, newest first (by `created_at`, then `job_id`).
    pub jobs: Vec<JobSummary>,
    /// Pass as `before` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_before: Option<String>,
}

impl JobPage {
    /// The page of `jobs`, with the cursor of the next page when there is one.
    pub fn of(jobs: &[Job], next: Option<JobCursor>) -> Self {
        Self {
            jobs: jobs.iter().map(JobSummary::from).collect(),
            next_before: next.map(|place| place.to_string()),
        }
    }
}

/// Backfill jobs, newest first.
///
/// A summary of each job: its counts, without the lists of its record (`sources`, `errors`,
/// the rollback's `kept_sample`); `GET /v1/backfill/{job_id}` has the full record.
#[utoipa::path(get, path = "/v1/backfill", tag = "backfill",
    params(JobsQuery),
    responses(
        (status = 200, body = JobPage),
        (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 503, body = Problem),
    ),
    security(("bearer" = [])))]
async fn list_jobs(
    State(state): State<AppState>,
    _admin: Admin,
    Query(query): Query<JobsQuery>,
) -> Result<Json<JobPage>, ApiError> {
    let limit = PageLimit::read(query.limit)?.get();
    let before = query
        .before
        .as_deref()
        .map(str::parse::<JobCursor>)
        .transpose()
        .map_err(|why| ApiError::InvalidRequest(format!("before: {why}")))?;
    let (jobs, next) = state.backfill.jobs(before.as_ref(), limit).await?;
    Ok(Json(JobPage::of(&jobs, next)))
}

/// Starts a backfill job (runs in the background; follow it with `GET /v1/backfill/{job_id}`).
#[utoipa::path(post, path = "/v1/backfill", tag = "backfill",
    request_body = StartJob,
    responses(
        (status = 202, description = "Started", body = Job, links(
            ("GetJob" = (operation_id = "get_job", parameters(("job_id" = "$response.body#/job_id")))),
            ("ResumeJob" = (operation_id = "resume_job", parameters(("job_id" = "$response.body#/job_id")))),
            ("RollBackJob" = (operation_id = "rollback_job", parameters(("job_id" = "$response.body#/job_id")))),
        )),
        (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 503, body = Problem), (status = 504, body = Problem),
    ),
    security(("bearer" = [])))]
async fn start_job(
    State(state): State<AppState>,
    Admin(principal): Admin,
    JsonBody(body): JsonBody<StartJob>,
) -> Result<Response, ApiError> {
    check_name("default_owner", &body.default_owner)?;
    if body.sources.is_empty() && body.session_ids.is_empty() {
        return Err(ApiError::InvalidRequest(
            "name at least one source or session id".into(),
        ));
    }
    if body.session_ids.len() > MAX_EXPLICIT_IDS {
        return Err(ApiError::InvalidRequest(format!(
            "at most {MAX_EXPLICIT_IDS} session_ids per request; use `gatehouse backfill --ids-file` for more"
        )));
    }
    // An invalid id is a 400 that starts nothing (the id files of `gatehouse backfill` report
    // theirs in the job instead: a file is not refused for one bad line).
    for (i, id) in body.session_ids.iter().enumerate() {
        state
            .session_ids()
            .parse(id)
            .map_err(|e| ApiError::InvalidRequest(format!("session_ids[{i}]: {e}")))?;
    }
    // Counted before any is resolved (each a look at the disk).
    if body.sources.len() > MAX_SOURCES {
        return Err(SourceError::TooMany(body.sources.len()).into());
    }
    let sources = body
        .sources
        .iter()
        .map(|s| state.backfill.roots().resolve(s))
        .collect::<Result<Vec<_>, _>>()?;
    sources::check_list(&sources)?;
    let request = JobRequest {
        dry_run: body.dry_run,
        default_owner: body.default_owner,
        sources,
        session_ids: body.session_ids,
        actor: principal.sub,
    };
    let job = state.backfill.create(&request).await?;
    state.backfill.spawn(job.clone(), request);
    Ok(accepted(&job))
}

/// A job: state, progress, counts and errors.
#[utoipa::path(get, path = "/v1/backfill/{job_id}", tag = "backfill",
    params(("job_id" = String, Path, description = "The job id")),
    responses(
        (status = 200, body = Job),
        (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 503, body = Problem),
    ),
    security(("bearer" = [])))]
async fn get_job(
    State(state): State<AppState>,
    _admin: Admin,
    Path(job_id): Path<String>,
) -> Result<Json<Job>, ApiError> {
    Ok(Json(state.backfill.job(&job_id).await?))
}

/// Resumes an interrupted or failed job (its sources are read again; assignments are
/// idempotent).
#[utoipa::path(post, path = "/v1/backfill/{job_id}/resume", tag = "backfill",
    params(("job_id" = String, Path, description = "The job id")),
    responses(
        (status = 202, body = Job),
        (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem),
        (status = 503, body = Problem), (status = 504, body = Problem),
    ),
    security(("bearer" = [])))]
async fn resume_job(
    State(state): State<AppState>,
    _admin: Admin,
    Path(job_id): Path<String>,
) -> Result<Response, ApiError> {
    let job = state.backfill.resume(&job_id).await?;
    state
        .backfill
        .spawn(job.clone(), Backfill::request_of(&job));
    Ok(accepted(&job))
}

/// Rolls a job back: releases the sessions it assigned that still have the owner it gave them.
/// A job rolled back before is left as it is (`released: 0`, `already_rolled_back: true`).
#[utoipa::path(post, path = "/v1/backfill/{job_id}/rollback", tag = "backfill",
    params(("job_id" = String, Path, description = "The job id")),
    responses(
        (status = 200, body = RollbackOutcome),
        (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem),
        (status = 503, body = Problem), (status = 504, body = Problem),
    ),
    security(("bearer" = [])))]
async fn rollback_job(
    State(state): State<AppState>,
    Admin(principal): Admin,
    Path(job_id): Path<String>,
) -> Result<Json<RollbackOutcome>, ApiError> {
    Ok(Json(
        state.backfill.rollback(&job_id, &principal.sub).await?,
    ))
}

/// Compares the sources with the owners in the store (`?source=DIR`, repeatable).
#[utoipa::path(get, path = "/v1/backfill/verify", tag = "backfill",
    params(("source" = inline(Vec<SourceDir>), Query, description = "A data directory inside the allowed roots (repeat for several): an existing directory on the server's disk, so 400 for any other")),
    responses(
        (status = 200, body = Verification),
        (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 503, body = Problem),
    ),
    security(("bearer" = [])))]
async fn verify(
    State(state): State<AppState>,
    admin: Admin,
    RawQuery(query): RawQuery,
) -> Result<Json<Verification>, ApiError> {
    let mut sources = Vec::new();
    for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match key.as_ref() {
            "source" => sources.push(state.backfill.roots().resolve(&value)?),
            other => {
                return Err(ApiError::InvalidRequest(format!(
                    "unknown parameter {other:?} (use source=DIR, repeatable)"
                )));
            }
        }
    }
    if sources.is_empty() {
        return Err(ApiError::InvalidRequest(
            "name at least one source=DIR".into(),
        ));
    }
    let named: Vec<String> = sources.iter().map(|p| p.display().to_string()).collect();
    let report = state.backfill.verify(sources, Vec::new()).await?;
    let summary = crate::records::VerifySummary {
        at: Timestamp::now(),
        by: admin.0.sub.clone(),
        sources: named,
        expected: report.expected,
        owned: report.owned,
        missing: report.missing,
        extra: report.extra,
        unindexed: report.unindexed,
        errors: report.errors.len() as u64,
        complete: report.complete,
    };
    // Kept for the rollout report (`ownership.last_verify`); the answer does not depend on it.
    if let Err(e) = state.store.save_verification(&summary).await {
        tracing::warn!(error = %e, "verification done but its summary not saved: the rollout report shows the one before");
    }
    Ok(Json(report))
}
