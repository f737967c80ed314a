"""Send a fuzz :class:`~tests.fuzz_cases.Case` as raw gRPC protobuf or raw HTTP, and read the answer.

No tritonclient helpers on the request side: they check datatypes and sizes before sending,
and the point is what the server does with requests a careless or hostile client writes.
"""
from __future__ import annotations

import dataclasses
import http.client
import json
import urllib.parse
from typing import Any

import grpc
import numpy as np
from tritonclient.grpc import service_pb2, service_pb2_grpc

from tests.fuzz_cases import Case

NUMPY = {"UINT8": np.uint8, "FP32": np.float32, "INT64": np.int64}


@dataclasses.dataclass(frozen=True)
class Answer:
    ok: bool
    status: str  # gRPC status name ("OK", "INVALID_ARGUMENT", ...) or the HTTP status code
    message: str  # the error message ("" on success)
    outputs: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)  # numeric outputs only
    answered: bool = True  # False: no answer before the deadline, or the connection broke


def _grpc_parameter(param: service_pb2.InferParameter, value: Any) -> None:
    if isinstance(value, bool):
        param.bool_param = value
    elif isinstance(value, int):
        param.int64_param = value
    elif isinstance(value, float):
        param.double_param = value
    else:
        param.string_param = str(value)


def grpc_request(case: Case) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name=case.model, model_version=case.version, id=f"fuzz-{case.index}")
    for key, value in case.parameters:
        _grpc_parameter(request.parameters[key], value)
    for inp in case.inputs:
        tensor = request.inputs.add()
        tensor.name, tensor.datatype = inp.name, inp.datatype
        tensor.shape.extend(inp.shape)
        request.raw_input_contents.append(inp.payload)
    return request


def send_grpc(stub: service_pb2_grpc.GRPCInferenceServiceStub, case: Case, timeout_s: float) -> Answer:
    try:
        response = stub.ModelInfer(grpc_request(case), timeout=timeout_s)
    except grpc.RpcError as exc:
        code = exc.code()
        broken = code == grpc.StatusCode.DEADLINE_EXCEEDED or (
            code == grpc.StatusCode.UNAVAILABLE and any(s in (exc.details() or "") for s in
                                                        ("failed to connect", "Socket closed", "Connection reset")))
        return Answer(False, code.name, exc.details() or "", answered=not broken)
    outputs = {}
    for out, raw in zip(response.outputs, response.raw_output_contents):
        if out.datatype in NUMPY:
            outputs[out.name] = np.frombuffer(raw, dtype=NUMPY[out.datatype]).reshape(tuple(out.shape))
    return Answer(True, "OK", "", outputs)


def http_body(case: Case) -> tuple[bytes, dict[str, str]]:
    """The request body and headers: JSON data, or Triton's binary tensor extension."""
    inputs, blobs = [], []
    for inp in case.inputs:
        entry: dict[str, Any] = {"name": inp.name, "datatype": inp.datatype, "shape": list(inp.shape)}
        if case.http_json and inp.values is not None:
            entry["data"] = [v.decode("utf-8") if isinstance(v, bytes) else v for v in inp.values]
        else:
            entry["parameters"] = {"binary_data_size": len(inp.payload)}
            blobs.append(inp.payload)
        inputs.append(entry)
    header: dict[str, Any] = {"id": f"fuzz-{case.index}", "inputs": inputs}
    if case.parameters:
        header["parameters"] = dict(case.parameters)
    head = json.dumps(header).encode()  # NaN/Infinity stay as Python writes them: not JSON, on purpose
    if not blobs:
        return head, {"Content-Type": "application/json"}
    return head + b"".join(blobs), {"Content-Type": "application/octet-stream",
                                    "Inference-Header-Content-Length": str(len(head))}


def _http_outputs(body: bytes, header_length: int | None) -> dict[str, np.ndarray]:
    head = json.loads(body[:header_length] if header_length is not None else body)
    offset, outputs = header_length or 0, {}
    for out in head.get("outputs", []):
        size = (out.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            raw, offset = body[offset:offset + size], offset + size
            if out["datatype"] in NUMPY:
                outputs[out["name"]] = np.frombuffer(raw, dtype=NUMPY[out["datatype"]]).reshape(out["shape"])
        elif out["datatype"] in NUMPY:
            outputs[out["name"]] = np.array(out["data"], dtype=NUMPY[out["datatype"]]).reshape(out["shape"])
    return outputs


def send_http(url: str, case: Case, timeout_s: float) -> Answer:
    host, port = url.rsplit(":", 1)
    model = urllib.parse.quote(case.model, safe="")
    path = f"/v2/models/{model}" + (f"/versions/{urllib.parse.quote(case.version, safe='')}" if case.version else "")
    body, headers = http_body(case)
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout_s)
    try:
        conn.request("POST", path + "/infer", body=body, headers=headers)
        response = conn.getresponse()
        data = response.read()
        header_length = response.getheader("Inference-Header-Content-Length")
    except (OSError, http.client.HTTPException) as exc:
        return Answer(False, "no answer", f"{type(exc).__name__}: {exc}", answered=False)
    finally:
        conn.close()
    if response.status != 200:
        try:
            message = json.loads(data).get("error", "")
        except ValueError:
            message = data.decode(errors="replace")
        return Answer(False, str(response.status), message)
    return Answer(True, "200", "", _http_outputs(data, int(header_length) if header_length else None))
