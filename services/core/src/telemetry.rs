//! Logs, traces and metrics.
//!
//! - Logs: `RUST_LOG` filters (default `info`); `HERD_LOG_FORMAT=json` writes JSON lines, each
//!   with the fields of its spans (the turn and webhook spans carry `trace_id`).
//! - Traces: every process makes OpenTelemetry spans (W3C trace context, carried from the webhook
//!   through the Redis stream entry to the worker); with `OTEL_EXPORTER_OTLP_ENDPOINT` set they are
//!   exported over OTLP/HTTP (JSON) to `$OTEL_EXPORTER_OTLP_ENDPOINT/v1/traces`, service name
//!   `OTEL_SERVICE_NAME` (default `herd`).
//! - Metrics: a Prometheus recorder for the `metrics` macros; [`render_metrics`] gives the text
//!   that every service serves at `/metrics`.

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::collections::HashMap;
use std::sync::OnceLock;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();
static METRICS: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs logging, tracing (OTLP export when `OTEL_EXPORTER_OTLP_ENDPOINT` is set) and the
/// metrics recorder, once per process; later calls do nothing.
pub fn init() {
    let endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok().filter(|e| !e.trim().is_empty());
    let service = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| "herd".into());
    init_with(endpoint.as_deref(), &service);
}

/// [`init`] with an explicit OTLP endpoint (`None`: spans stay in the process, ids still made).
pub fn init_with(otlp_endpoint: Option<&str>, service: &str) {
    metrics_handle();
    // The OTLP client speaks HTTPS too: rustls needs its process-wide crypto provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    if PROVIDER.get().is_some() {
        return;
    }
    let mut builder =
        SdkTracerProvider::builder().with_resource(opentelemetry_sdk::Resource::builder().with_service_name(service.to_string()).build());
    let mut export_error = None;
    if let Some(ep) = otlp_endpoint {
        let url = format!("{}/v1/traces", ep.trim_end_matches('/'));
        match opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpJson)
            .with_endpoint(url)
            .build()
        {
            Ok(exporter) => builder = builder.with_batch_exporter(exporter),
            Err(e) => export_error = Some(e.to_string()),
        }
    }
    let provider = builder.build();
    let tracer = provider.tracer("herd");
    let _ = PROVIDER.set(provider);
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let json = std::env::var("HERD_LOG_FORMAT").is_ok_and(|v| v == "json");
    let otel = tracing_opentelemetry::layer().with_tracer(tracer);
    let registry = tracing_subscriber::registry().with(filter).with(otel);
    let _ = if json {
        registry
            .with(tracing_subscriber::fmt::layer().json().with_current_span(true).with_span_list(false).with_writer(std::io::stderr))
            .try_init()
    } else {
        registry.with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr)).try_init()
    };
    if let Some(e) = export_error {
        tracing::error!(error = %e, "OTLP exporter not started; spans are not exported");
    }
}

/// Sends the spans still buffered (call before exit, and in tests before checking a receiver).
pub fn flush() {
    if let Some(p) = PROVIDER.get() {
        let _ = p.force_flush();
    }
}

/// The W3C `traceparent` of `span` (None when it has no valid context).
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove("traceparent")
}

/// Makes `span` a child of the remote span named by `traceparent` (ignored when absent or bad).
pub fn set_parent(span: &tracing::Span, traceparent: Option<&str>) {
    let Some(tp) = traceparent else { return };
    let carrier: HashMap<String, String> = [("traceparent".to_string(), tp.to_string())].into();
    let cx = TraceContextPropagator::new().extract(&carrier);
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
}

/// The trace id of `span`, hex (for log lines and the `trace_id` span field).
pub fn trace_id_of(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

/// The process's Prometheus recorder (installed on first use).
pub fn metrics_handle() -> &'static PrometheusHandle {
    METRICS.get_or_init(|| {
        let secs = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
        let builder = PrometheusBuilder::new().set_buckets(&secs).expect("non-empty buckets");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // Another recorder may be installed already (a test binary); then ours only renders
        // what it was given, which is nothing: keep going rather than fail.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// Prometheus text of every metric of this process.
pub fn render_metrics() -> String {
    metrics_handle().render()
}
