//! Metrics from every function as CloudWatch Embedded Metric Format (EMF) lines: one JSON line
//! per invocation and dimension set, written to stdout, where Lambda sends it to CloudWatch Logs
//! and CloudWatch turns it into metrics (namespace [`NAMESPACE`]) without any API call.
//!
//! A handler runs its work inside [`invocation`]: the code it calls records with [`add`] (sums:
//! files, bytes, failures) and [`sample`] (distributions: durations, ages), and the lines are
//! written when the invocation ends. Recording outside an invocation does nothing, so library
//! code records unconditionally. The recorder travels with the task (a tokio task-local): the
//! local runner's concurrent handlers each get their own lines; work a handler spawns onto
//! another task is wrapped in [`carried`] to keep recording into the same invocation.
//!
//! Each line's directive names two dimension sets: the full one (e.g. `Function, Route,
//! Destination`) for dashboards, and `Function` alone so alarms need not know route names.
//! The `Function` value is the Lambda function's name (`AWS_LAMBDA_FUNCTION_NAME`) when there is
//! one, so two deployments in one account stay apart, else the function's logical name.
//!
//! Output is off until [`set_output`] turns it on: each Lambda `main` does, `ferry serve` does
//! unless told not to, and one-shot local commands keep their stdout for their results.
//! A hand-written serializer rather than the `metrics` facade with an EMF exporter: the facade
//! records into one process-global registry, which cannot keep the concurrent invocations of
//! the local runner apart, and the format is a few fixed fields.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::io::Write as _;
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value, json};

/// The CloudWatch namespace of every ferry metric.
pub const NAMESPACE: &str = "ferry";

/// EMF allows at most this many values per metric in one line.
pub const MAX_VALUES: usize = 100;

/// EMF allows at most this many metrics per directive: a dimension set with more is split
/// over several lines.
pub const MAX_METRICS: usize = 100;

/// Where metric lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// One JSON line per invocation and dimension set on stdout (Lambda ships it to CloudWatch).
    Stdout,
    /// Nothing is written.
    Off,
}

/// Where lines go, including the in-memory capture tests use.
#[derive(Debug)]
enum Target {
    Stdout,
    Off,
    Memory(Vec<String>),
}

static TARGET: Mutex<Target> = Mutex::new(Target::Off);

/// Sends metric lines to `output` from now on (process-wide).
pub fn set_output(output: Output) {
    *lock(&TARGET) = match output {
        Output::Stdout => Target::Stdout,
        Output::Off => Target::Off,
    };
}

/// Test hook: keeps every line written from now on in memory (see [`captured`]) instead of
/// writing it anywhere. Lines captured before are kept.
pub fn capture() {
    let mut target = lock(&TARGET);
    if !matches!(*target, Target::Memory(_)) {
        *target = Target::Memory(Vec::new());
    }
}

/// Test hook: the lines captured since [`capture`] (empty when not capturing).
pub fn captured() -> Vec<String> {
    match &*lock(&TARGET) {
        Target::Memory(lines) => lines.clone(),
        _ => Vec::new(),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// CloudWatch units ferry uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// A number of things.
    Count,
    /// Bytes.
    Bytes,
    /// Milliseconds.
    Milliseconds,
    /// Seconds.
    Seconds,
}

impl Unit {
    /// The unit's name in EMF.
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Bytes => "Bytes",
            Unit::Milliseconds => "Milliseconds",
            Unit::Seconds => "Seconds",
        }
    }
}

/// One metric in one dimension set: a sum, or up to [`MAX_VALUES`] samples.
#[derive(Debug)]
struct Series {
    unit: Unit,
    values: Vec<f64>,
    summed: bool,
}

/// Dimension values in their order, `Function` first.
type DimensionSet = Vec<(&'static str, String)>;

/// What one invocation recorded.
#[derive(Debug)]
struct Recorder {
    function: String,
    series: Mutex<BTreeMap<DimensionSet, BTreeMap<&'static str, Series>>>,
}

tokio::task_local! {
    static CURRENT: Arc<Recorder>;
}

/// Functions whose first invocation in this process has been counted as a cold start.
static STARTED: Mutex<BTreeSet<&'static str>> = Mutex::new(BTreeSet::new());

/// Runs `work` as one invocation of `function` (its logical name, e.g. `blob-copy`), then
/// writes what it recorded. Inside another invocation, `work` simply records into that one (a
/// handler and the library entry point it calls each open one; the outer one counts). The first
/// invocation of a function in this process also records `ColdStart`.
pub async fn invocation<F: Future>(function: &'static str, work: F) -> F::Output {
    if CURRENT.try_with(|_| ()).is_ok() {
        return work.await;
    }
    let recorder = Arc::new(Recorder {
        function: std::env::var("AWS_LAMBDA_FUNCTION_NAME")
            .ok()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| function.to_string()),
        series: Mutex::default(),
    });
    let cold = lock(&STARTED).insert(function);
    let out = CURRENT
        .scope(recorder.clone(), async {
            if cold {
                add("ColdStart", Unit::Count, 1.0, &[]);
            }
            work.await
        })
        .await;
    recorder.flush();
    out
}

/// `work`, recording into the current invocation (if any) wherever it runs: wrap a future that
/// is spawned onto its own task.
pub fn carried<F: Future>(work: F) -> impl Future<Output = F::Output> {
    let current = CURRENT.try_with(Arc::clone).ok();
    async move {
        match current {
            Some(recorder) => CURRENT.scope(recorder, work).await,
            None => work.await,
        }
    }
}

/// Adds `value` to the metric `name` in the dimension set `Function` + `dimensions` of the
/// current invocation; nothing outside one.
pub fn add(name: &'static str, unit: Unit, value: f64, dimensions: &[(&'static str, &str)]) {
    record(name, unit, value, dimensions, true);
}

/// Records one sample of `name` (a duration, an age): CloudWatch computes percentiles over
/// them. Beyond [`MAX_VALUES`] samples in one invocation, further ones are dropped.
pub fn sample(name: &'static str, unit: Unit, value: f64, dimensions: &[(&'static str, &str)]) {
    record(name, unit, value, dimensions, false);
}

fn record(
    name: &'static str,
    unit: Unit,
    value: f64,
    dimensions: &[(&'static str, &str)],
    summed: bool,
) {
    let _ = CURRENT.try_with(|recorder| {
        let mut set: DimensionSet = Vec::with_capacity(dimensions.len() + 1);
        set.push(("Function", recorder.function.clone()));
        set.extend(dimensions.iter().map(|(k, v)| (*k, v.to_string())));
        let mut series = lock(&recorder.series);
        let entry = series
            .entry(set)
            .or_default()
            .entry(name)
            .or_insert_with(|| Series {
                unit,
                values: Vec::new(),
                summed,
            });
        if entry.summed {
            match entry.values.first_mut() {
                Some(total) => *total += value,
                None => entry.values.push(value),
            }
        } else if entry.values.len() < MAX_VALUES {
            entry.values.push(value);
        }
    });
}

impl Recorder {
    /// Writes one line per dimension set (none when nothing was recorded).
    fn flush(&self) {
        let series = std::mem::take(&mut *lock(&self.series));
        if series.is_empty() {
            return;
        }
        let timestamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let mut lines = Vec::new();
        for (dims, metrics) in series {
            let metrics: Vec<(&'static str, Series)> = metrics.into_iter().collect();
            for group in metrics.chunks(MAX_METRICS) {
                lines.push(line(timestamp, &dims, group).to_string());
            }
        }
        let mut target = lock(&TARGET);
        match &mut *target {
            Target::Off => {}
            Target::Memory(kept) => kept.extend(lines),
            Target::Stdout => {
                let mut out = std::io::stdout().lock();
                for l in lines {
                    // A closed stdout must not fail the invocation.
                    let _ = writeln!(out, "{l}");
                }
                let _ = out.flush();
            }
        }
    }
}

/// One EMF line: the directive, then every dimension and metric as a root member.
fn line(timestamp: u64, dims: &DimensionSet, metrics: &[(&'static str, Series)]) -> Value {
    let keys: Vec<&str> = dims.iter().map(|(k, _)| *k).collect();
    let mut sets = vec![keys.clone()];
    if keys.len() > 1 {
        sets.push(vec!["Function"]);
    }
    let definitions: Vec<Value> = metrics
        .iter()
        .map(|(name, s)| json!({"Name": name, "Unit": s.unit.as_str()}))
        .collect();
    let mut root = Map::new();
    root.insert(
        "_aws".into(),
        json!({
            "Timestamp": timestamp,
            "CloudWatchMetrics": [{"Namespace": NAMESPACE, "Dimensions": sets, "Metrics": definitions}]
        }),
    );
    for (k, v) in dims {
        root.insert((*k).to_string(), Value::String(v.clone()));
    }
    for (name, s) in metrics {
        let value = match s.values.as_slice() {
            [one] => json!(one),
            many => json!(many),
        };
        root.insert((*name).to_string(), value);
    }
    Value::Object(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_invocation_writes_one_line_per_dimension_set_with_every_member_at_the_root() {
        capture();
        invocation("unit-test-fn", async {
            add("FilesDelivered", Unit::Count, 1.0, &[("Route", "r1")]);
            add("FilesDelivered", Unit::Count, 2.0, &[("Route", "r1")]);
            add("BytesDelivered", Unit::Bytes, 10.0, &[("Route", "r1")]);
            sample(
                "DeliveryDuration",
                Unit::Milliseconds,
                5.0,
                &[("Route", "r1")],
            );
            sample(
                "DeliveryDuration",
                Unit::Milliseconds,
                7.0,
                &[("Route", "r1")],
            );
            // Nested: records into the outer invocation.
            invocation("inner", async {
                add("FilesDelivered", Unit::Count, 1.0, &[("Route", "r2")])
            })
            .await;
        })
        .await;
        add("Outside", Unit::Count, 1.0, &[]);
        let lines: Vec<Value> = captured()
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .filter(|v: &Value| v["Function"] == "unit-test-fn")
            .collect();
        assert_eq!(lines.len(), 3, "{lines:?}");
        let r1 = lines.iter().find(|v| v["Route"] == "r1").unwrap();
        assert_eq!(r1["FilesDelivered"], json!(3.0));
        assert_eq!(r1["BytesDelivered"], json!(10.0));
        assert_eq!(r1["DeliveryDuration"], json!([5.0, 7.0]));
        let directive = &r1["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], "ferry");
        assert_eq!(
            directive["Dimensions"],
            json!([["Function", "Route"], ["Function"]])
        );
        let r2 = lines.iter().find(|v| v["Route"] == "r2").unwrap();
        assert_eq!(r2["FilesDelivered"], json!(1.0));
        let cold = lines.iter().find(|v| v.get("ColdStart").is_some()).unwrap();
        assert_eq!(
            cold["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([["Function"]])
        );
        assert!(captured().iter().all(|l| !l.contains("Outside")));
    }

    #[tokio::test]
    async fn more_than_a_directive_holds_is_split_over_lines() {
        capture();
        invocation("unit-test-split", async {
            for i in 0..(MAX_METRICS + 1) {
                let name: &'static str = Box::leak(format!("M{i:03}").into_boxed_str());
                add(name, Unit::Count, 1.0, &[("Part", "A")]);
            }
            for _ in 0..(MAX_VALUES + 5) {
                sample("S", Unit::Milliseconds, 1.0, &[("Part", "B")]);
            }
        })
        .await;
        let lines: Vec<Value> = captured()
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .filter(|v: &Value| v["Function"] == "unit-test-split" && v.get("Part").is_some())
            .collect();
        let sizes: Vec<usize> = lines
            .iter()
            .map(|l| {
                l["_aws"]["CloudWatchMetrics"][0]["Metrics"]
                    .as_array()
                    .unwrap()
                    .len()
            })
            .collect();
        assert_eq!(sizes, [MAX_METRICS, 1, 1], "{lines:?}");
        let samples = lines.iter().find(|l| l["Part"] == "B").unwrap();
        assert_eq!(samples["S"].as_array().unwrap().len(), MAX_VALUES);
    }
}
