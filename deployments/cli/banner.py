"""The banner `lorafleet serve` prints once the fleet answers: the URL, ready-to-paste
`curl` and `openai` examples (for an adapter when there is one), where the metrics and
logs are, and how to watch the fleet. Pure text."""

from __future__ import annotations

from pathlib import Path

from deployments.config import LorafleetConfig


def ready_message(config: LorafleetConfig, adapter: str | None, metrics_url: str | None = None,
                  log_folder: Path | None = None) -> str:
    url = f"http://{config.server.host}:{config.server.port}"
    model = adapter or config.served_names[0]
    extra = ""
    if metrics_url:
        extra += f"  Prometheus metrics (lorafleet's, Ray's, Ray Serve's): {metrics_url}\n"
    extra += f"  a live view of the fleet:  lorafleet top --url {url}\n"
    if log_folder:
        extra += f"  logs (Ray, Serve, vLLM):   {log_folder}\n"
    return f"""
lorafleet is serving {", ".join(config.served_names)} on {url}  (Ctrl-C to stop)

  curl {url}/v1/models
  curl {url}/v1/completions -H 'Content-Type: application/json' \\
       -d '{{"model": "{model}", "prompt": "Hello", "max_tokens": 16}}'

  python - <<'EOF'
from openai import OpenAI
client = OpenAI(base_url="{url}/v1", api_key="unused")
print(client.chat.completions.create(model="{model}", max_tokens=16,
      messages=[{{"role": "user", "content": "Hello"}}]).choices[0].message.content)
EOF

{extra}"""
