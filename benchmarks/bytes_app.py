"""B7's anchor: a FastAPI endpoint returning pre-made bytes, under the service's uvicorn configuration.

``POST /v1/init`` reads the JSON body and answers the safetensors bytes of a 256×256 float32
tensor made once at start-up (same length and content type as initserve's answer), so the
difference from initserve is exactly the per-request work of validating and generating.
"""

from __future__ import annotations

import argparse

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, Response
from initserve.engine import SafetensorsFile, parse_spec

SMALL_SPEC = {"shape": [256, 256], "scheme": "kaiming_normal", "dtype": "float32", "seed": 0}
PAYLOAD = SafetensorsFile(parse_spec(SMALL_SPEC)).to_bytes()

app = FastAPI()


@app.get("/healthz")
async def healthz() -> PlainTextResponse:
    return PlainTextResponse("ok")


@app.post("/v1/init")
async def premade(request: Request) -> Response:
    await request.body()
    return Response(PAYLOAD, media_type="application/octet-stream")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    # The same options as `initserve serve` (initserve.api.cli.serve).
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        timeout_keep_alive=75,
        access_log=False,
        server_header=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
