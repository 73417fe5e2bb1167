"""Tracing and metrics with the OpenTelemetry SDK as instrumented functions export them:
nested spans with attributes, events and a recorded exception through a
BatchSpanProcessor (its exporter thread) into an in-memory exporter, context carried into
threads and across a W3C traceparent header, and counters and histograms read back."""

from concurrent.futures import ThreadPoolExecutor

from opentelemetry import context, propagate
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode


def handler(event, context_):
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "corpus"}))
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=50))
    tracer = provider.get_tracer("corpus")
    reader = InMemoryMetricReader()
    meter = MeterProvider(metric_readers=[reader]).get_meter("corpus")
    requests = meter.create_counter("requests")
    latency = meter.create_histogram("latency_ms")
    headers = {}
    with tracer.start_as_current_span("invoke", attributes={"faas.trigger": "http"}) as root:
        propagate.inject(headers)
        ctx = context.get_current()

        def work(i):
            token = context.attach(ctx)
            try:
                with tracer.start_as_current_span(f"work-{i}") as span:
                    span.set_attribute("item", i)
                    requests.add(1, {"kind": "even" if i % 2 == 0 else "odd"})
                    latency.record(i * 1.5)
            finally:
                context.detach(token)
        with ThreadPoolExecutor(3) as ex:
            list(ex.map(work, range(event["items"])))
        with tracer.start_as_current_span("fails") as span:
            try:
                raise ValueError("bad input")
            except ValueError as e:
                span.record_exception(e)
                span.set_status(Status(StatusCode.ERROR, "bad input"))
        root.add_event("done", {"items": event["items"]})
    downstream = propagate.extract(headers)
    with tracer.start_as_current_span("downstream", context=downstream) as remote:
        same_trace = remote.get_span_context().trace_id == root.get_span_context().trace_id
    provider.force_flush()
    spans = exporter.get_finished_spans()
    metrics = reader.get_metrics_data().resource_metrics[0].scope_metrics[0].metrics
    points = {m.name: [p for p in m.data.data_points] for m in metrics}
    provider.shutdown()
    by_name = {s.name: s for s in spans}
    return {"spans": sorted(by_name), "children": sum(
                1 for s in spans if s.parent is not None and s.parent.span_id ==
                root.get_span_context().span_id),
            "error": by_name["fails"].status.status_code.name,
            "exception_event": by_name["fails"].events[0].name, "same_trace": same_trace,
            "traceparent": headers["traceparent"].count("-"),
            "counts": sorted((dict(p.attributes)["kind"], p.value) for p in points["requests"]),
            "histogram": [points["latency_ms"][0].count, points["latency_ms"][0].sum],
            "service": spans[0].resource.attributes["service.name"]}
