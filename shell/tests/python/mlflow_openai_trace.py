"""`mlflow.openai.autolog()` traces a real `openai` client into runql.

The client talks to a small fake OpenAI server this script starts on loopback (it answers
chat completions with a fixed reply and token usage), so nothing leaves the machine. Run by
shell/tests/it/mlflow.rs with MLFLOW_TRACKING_URI set to `runql serve`; prints the trace id.
"""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import mlflow
import openai


class FakeOpenAI(BaseHTTPRequestHandler):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        assert self.path == "/v1/chat/completions", self.path
        reply = {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1700000000,
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "Paris."},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
        }
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


fake = ThreadingHTTPServer(("127.0.0.1", 0), FakeOpenAI)
threading.Thread(target=fake.serve_forever, daemon=True).start()

# The client exports each span live (log_spans, OTLP) only to a server whose /version says
# 3.4 or newer, then the whole trace: count the live exports that went through.
from mlflow.store.tracking.rest_store import RestStore

live_exports = []
_log_spans = RestStore.log_spans


def counting_log_spans(self, *args, **kwargs):
    logged = _log_spans(self, *args, **kwargs)
    live_exports.append(len(logged))
    return logged


RestStore.log_spans = counting_log_spans

mlflow.set_experiment("llm-app")
mlflow.openai.autolog()
client = openai.OpenAI(base_url=f"http://127.0.0.1:{fake.server_port}/v1", api_key="not-a-key")
with mlflow.start_run(run_name="qa") as run:
    out = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "What is the capital of France?"}],
    )
    assert out.choices[0].message.content == "Paris."
trace_id = mlflow.get_last_active_trace_id()
mlflow.flush_trace_async_logging()
trace = mlflow.get_trace(trace_id)
assert trace is not None, trace_id
assert trace.info.request_metadata.get("mlflow.sourceRun") == run.info.run_id
assert live_exports, "the client exported no span live: does GET /version answer 3.4 or newer?"
print(json.dumps({"trace_id": trace_id, "run_id": run.info.run_id}))
fake.shutdown()
