"""The OpenTelemetry SDK exports spans to runql over OTLP/HTTP (protobuf), with the official
exporter; then one span by OTLP JSON. Run by shell/tests/it/mlflow.rs with RUNQL_URL set to
`runql serve`; prints the OpenTelemetry trace id (hex) of the SDK's trace.
"""

import json
import os
import urllib.request

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

url = os.environ["RUNQL_URL"].rstrip("/")
provider = TracerProvider(resource=Resource.create({"service.name": "rag-app"}))
exporter = OTLPSpanExporter(endpoint=url + "/v1/traces", headers={"x-mlflow-experiment-id": "otel-app"})
provider.add_span_processor(SimpleSpanProcessor(exporter))
tracer = provider.get_tracer("test")

with tracer.start_as_current_span("answer") as root:
    root.set_attribute("input.value", "capital of France?")
    with tracer.start_as_current_span("llm") as llm:
        llm.set_attribute("gen_ai.request.model", "gpt-4o-mini")
        llm.set_attribute("gen_ai.usage.input_tokens", 11)
        llm.set_attribute("gen_ai.usage.output_tokens", 2)
    root.set_attribute("output.value", "Paris")
provider.force_flush()
trace_id = format(root.get_span_context().trace_id, "032x")

# The same collector by OTLP JSON: one span of another trace.
body = {"resourceSpans": [{"scopeSpans": [{"spans": [{
    "traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174", "name": "json-span",
    "kind": 2, "startTimeUnixNano": "1700000000000000000", "endTimeUnixNano": "1700000000500000000",
    "attributes": [{"key": "gen_ai.request.model", "value": {"stringValue": "claude-x"}}],
    "status": {"code": 1}}]}]}]}
req = urllib.request.Request(
    url + "/v1/traces", data=json.dumps(body).encode(),
    headers={"Content-Type": "application/json", "x-mlflow-experiment-id": "otel-app"},
)
assert json.loads(urllib.request.urlopen(req, timeout=30).read()) == {}
print(trace_id)
