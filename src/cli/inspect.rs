//! The inspection commands (`jobs`, `show`, `failed`, `find`) and `replay`: read the state bucket
//! through [`ferry::inspect`] page by page and print each page as it is read (human lines, or
//! one JSON object per line with `--json`; `show` prints one document).

use std::process::ExitCode;

use anyhow::Context as _;
use ferry::inspect::{
    DeadLetter, DestinationStatus, Detail, JobFilter, JobState, JobView, Pager,
    dead_letters_in_page, file_in_page, jobs_in_page, jobs_prefix, view_job,
};
use ferry_shared::job::{RejectedMessage, TransferJob};
use ferry_shared::layout::{Prefix, failure_key};
use ferry_shared::services::Services;
use ferry_shared::state::StateStoreExt;

use super::run::{describe_outcome, resolve_job_key};
use super::{EXIT_FAILED, print_json};

fn exit(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILED)
    }
}

/// `3/4 delivered`-style count of a job's destinations.
fn delivered(view: &JobView) -> String {
    let done = view
        .destinations
        .iter()
        .filter(|d| matches!(d.status, DestinationStatus::Delivered { .. }))
        .count();
    format!("{done}/{} delivered", view.destinations.len())
}

fn file_of(job: &TransferJob) -> String {
    match &job.object.url {
        Some(url) => url.clone(),
        None => format!("{}/{}", job.object.container, job.object.name),
    }
}

/// `ferry jobs`: one line per job, page by page.
pub(super) async fn jobs(
    services: &Services,
    filter: &JobFilter,
    limit: Option<usize>,
    page_size: usize,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let state = services.state.as_ref();
    let mut pages = Pager::with_page_size(state, jobs_prefix(filter.route.as_deref()), page_size);
    let mut counts = [0usize; 3];
    let mut shown = 0usize;
    let limit = limit.unwrap_or(usize::MAX);
    if !json {
        println!(
            "{:<8} {:<20} {:<16} {:<32} {:<14} FILE",
            "STATE", "CREATED", "ROUTE", "ID", "DESTINATIONS"
        );
    }
    'pages: while let Some(keys) = pages.next_page().await? {
        for item in jobs_in_page(state, keys, filter).await {
            if shown >= limit {
                break 'pages;
            }
            shown += 1;
            let view = match item {
                Ok(v) => v,
                Err(u) => {
                    if json {
                        print_json(&u, false)?;
                    } else {
                        println!("{:<8} {} ({})", "?", u.key, u.error);
                    }
                    continue;
                }
            };
            counts[view.state as usize] += 1;
            if json {
                print_json(&view, false)?;
            } else {
                println!(
                    "{:<8} {:<20} {:<16} {:<32} {:<14} {}",
                    view.state.as_str(),
                    view.job.created_at,
                    view.job.route,
                    view.job.id,
                    delivered(&view),
                    file_of(&view.job)
                );
            }
        }
    }
    if !json {
        println!(
            "{shown} jobs: {} pending, {} done, {} failed",
            counts[JobState::Pending as usize],
            counts[JobState::Done as usize],
            counts[JobState::Failed as usize]
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints a job with every destination (human form).
fn print_job(view: &JobView) {
    let job = &view.job;
    println!("job {} ({})", job.id, view.state.as_str());
    println!("  key:         {}", view.job_key);
    println!("  route:       {} (source {})", job.route, job.source);
    println!(
        "  file:        {} ({} bytes, etag {})",
        file_of(job),
        job.object.size,
        job.object.etag
    );
    println!("  created:     {}", job.created_at);
    println!("  correlation: {}", job.correlation_id);
    if let Some(folder) = &job.target_folder {
        println!("  folder:      {folder}");
    }
    for d in &view.destinations {
        match &d.status {
            DestinationStatus::Delivered { receipt: Some(r) } => {
                println!(
                    "  {}: delivered {} -> {} ({} bytes, {}{}, sha256 {}, {} ms)",
                    d.destination,
                    r.delivered_at,
                    r.location,
                    r.bytes,
                    r.md5
                        .as_deref()
                        .map_or("no MD5".to_string(), |m| format!("md5 {m}")),
                    if r.md5_verified_against_source {
                        " checked against the source"
                    } else {
                        ""
                    },
                    r.sha256,
                    r.duration_ms
                );
                if let Some(h) = &r.remote_hash {
                    println!(
                        "    {} {} ({})",
                        h.algorithm,
                        h.value,
                        if h.verified {
                            "verified"
                        } else {
                            "not reported"
                        }
                    );
                }
            }
            DestinationStatus::Delivered { receipt: None } => {
                println!("  {}: delivered", d.destination);
            }
            DestinationStatus::Failed { error } => {
                println!("  {}: FAILED: {error}", d.destination);
            }
            DestinationStatus::InFlight => {
                println!(
                    "  {}: not delivered yet (a resumable checkpoint is kept)",
                    d.destination
                );
            }
            DestinationStatus::Pending => println!("  {}: not delivered yet", d.destination),
        }
    }
    if let Some(f) = &view.failure {
        println!(
            "  dead-lettered {} after {} attempts (retrying could {}help): {}",
            f.failed_at,
            f.attempts,
            if f.retryable { "" } else { "not " },
            f.reason
        );
        println!("  replay with: ferry replay {}", job.id);
    }
}

fn print_message(m: &RejectedMessage) {
    println!("message {} (refused: {})", m.id, m.kind);
    println!("  source:   {}", m.source);
    println!(
        "  message:  {} (sequence {}, delivered {} times)",
        m.message_id, m.sequence_number, m.delivery_count
    );
    if let Some(c) = &m.correlation_id {
        println!("  correlation: {c}");
    }
    if let Some(b) = &m.blob_type {
        println!("  blob type: {b}");
    }
    println!("  refused:  {}", m.rejected_at);
    println!("  reason:   {}", m.reason);
    if let Some(r) = &m.dead_letter_reason {
        println!(
            "  broker dead-letter reason: {r}{}",
            m.dead_letter_description
                .as_deref()
                .map(|d| format!(" ({d})"))
                .unwrap_or_default()
        );
    }
    println!(
        "  body{}: {}",
        if m.body_truncated { " (cut)" } else { "" },
        m.body
    );
}

/// `ferry show JOB_ID`: exit 1 when there is no such job.
pub(super) async fn show(services: &Services, id: &str, json: bool) -> anyhow::Result<ExitCode> {
    let state = services.state.as_ref();
    if let Some((m, _)) = state
        .get_json::<RejectedMessage>(&failure_key(id))
        .await
        .ok()
        .flatten()
        .filter(|(m, _): &(RejectedMessage, String)| m.id == id && id.starts_with("msg-"))
    {
        if json {
            print_json(&m, true)?;
        } else {
            print_message(&m);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let key = resolve_job_key(services, id).await?;
    let (job, _) = state
        .get_json::<TransferJob>(&key)
        .await?
        .with_context(|| format!("no job at {key}"))?;
    let view = view_job(state, &key, job, Detail::Full).await?;
    if json {
        print_json(&view, true)?;
    } else {
        print_job(&view);
    }
    Ok(ExitCode::SUCCESS)
}

/// `ferry failed`: every dead letter with its reason, page by page.
pub(super) async fn failed(
    services: &Services,
    route: Option<&str>,
    page_size: usize,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let state = services.state.as_ref();
    let mut pages = Pager::with_page_size(state, Prefix::Failed.as_str(), page_size);
    let (mut jobs, mut messages) = (0usize, 0usize);
    while let Some(keys) = pages.next_page().await? {
        for letter in dead_letters_in_page(state, keys).await {
            if route.is_some() && letter.route() != route {
                continue;
            }
            if json {
                print_json(&letter, false)?;
                continue;
            }
            match &letter {
                DeadLetter::Job(f) => {
                    jobs += 1;
                    println!(
                        "job {} ({}) failed {} after {} attempts{}: {}",
                        f.job_id,
                        letter.route().unwrap_or("?"),
                        f.failed_at,
                        f.attempts,
                        if f.retryable { "" } else { ", not retryable" },
                        f.reason
                    );
                    for (dest, error) in &f.destinations {
                        println!("  {dest}: {error}");
                    }
                }
                DeadLetter::Message(m) => {
                    messages += 1;
                    println!(
                        "message {} (source {}) refused {} as {}: {}",
                        m.id, m.source, m.rejected_at, m.kind, m.reason
                    );
                }
                DeadLetter::Unreadable(u) => println!("{}: unreadable: {}", u.key, u.error),
            }
        }
    }
    if !json {
        println!(
            "{jobs} failed jobs, {messages} refused messages{}",
            if jobs > 0 {
                "; `ferry show ID` for details, `ferry replay ID` (or --all-failed) to retry"
            } else {
                ""
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `ferry find NAME`: every job for that file; exit 1 when there is none.
pub(super) async fn find(
    services: &Services,
    name: &str,
    route: Option<&str>,
    page_size: usize,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let state = services.state.as_ref();
    let mut pages = Pager::with_page_size(state, jobs_prefix(route), page_size);
    let mut found = 0usize;
    while let Some(keys) = pages.next_page().await? {
        for item in file_in_page(state, keys, name).await {
            match item {
                Ok(view) => {
                    found += 1;
                    if json {
                        print_json(&view, false)?;
                    } else {
                        print_job(&view);
                    }
                }
                Err(u) => tracing::warn!(job_key = %u.key, error = %u.error, "cannot read the job"),
            }
        }
    }
    if !json && found == 0 {
        println!("no job for a file named {name}");
    }
    Ok(exit(found > 0))
}

/// Clears a job's dead letter and runs it once; (success, human line, JSON).
async fn replay_one(
    services: &Services,
    engine: &ferry_shared::engine::TransferEngine,
    key: &str,
    id: &str,
) -> anyhow::Result<(bool, String, serde_json::Value)> {
    ferry::clear_failure(services.state.as_ref(), id).await?;
    Ok(describe_outcome(key, engine.run(key, 1).await))
}

/// `ferry replay JOB_ID`: exit 1 when the job fails again.
pub(super) async fn replay(
    services: &Services,
    id: &str,
    key: Option<&str>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    if id.starts_with("msg-") {
        return Err(super::UsageError(format!(
            "{id} is a refused pub/sub message, not a job: there is nothing to replay (`ferry show {id}` says why it was refused)"
        ))
        .into());
    }
    let key = match key {
        Some(k) => k.to_string(),
        None => resolve_job_key(services, id).await?,
    };
    let engine = services.engine().await?;
    let (ok, text, value) = replay_one(services, &engine, &key, id).await?;
    if json {
        print_json(&value, true)?;
    } else {
        println!("{text}");
    }
    Ok(exit(ok))
}

/// `ferry replay --all-failed`: every dead-lettered job (of `route`), one line each; exit 1
/// when any fails again.
pub(super) async fn replay_all(
    services: &Services,
    route: Option<&str>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let state = services.state.as_ref();
    let engine = services.engine().await?;
    let mut pages = Pager::new(state, Prefix::Failed.as_str());
    let (mut replayed, mut failed_again, mut skipped) = (0usize, 0usize, 0usize);
    while let Some(keys) = pages.next_page().await? {
        for letter in dead_letters_in_page(state, keys).await {
            let DeadLetter::Job(f) = &letter else {
                skipped += 1;
                continue;
            };
            if route.is_some() && letter.route() != route {
                continue;
            }
            let (ok, text, value) = replay_one(services, &engine, &f.job_key, &f.job_id).await?;
            replayed += 1;
            failed_again += usize::from(!ok);
            if json {
                print_json(&value, false)?;
            } else {
                println!("{text}");
            }
        }
    }
    if !json {
        println!(
            "{replayed} replayed, {} completed, {failed_again} failed again{}",
            replayed - failed_again,
            if skipped > 0 {
                format!("; {skipped} refused messages are not jobs and were left")
            } else {
                String::new()
            }
        );
    }
    Ok(exit(failed_again == 0))
}
