"""Assertion helpers for the rooms tests."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2

from services.common.status import status_details


async def expect_error(code: grpc.StatusCode, call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    err = info.value
    assert err.code() == code, f"{err.code()}: {err.details()}"
    return err


def detail(err: grpc.aio.AioRpcError, cls: type[Any]) -> Any:
    found = [d for d in status_details(err) if isinstance(d, cls)]
    assert found, f"no {cls.__name__} in {status_details(err)}"
    return found[0]


def error_info(err: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    return detail(err, error_details_pb2.ErrorInfo)


def violations(err: grpc.aio.AioRpcError) -> dict[str, str]:
    bad = detail(err, error_details_pb2.BadRequest)
    return {v.field: v.description for v in bad.field_violations}
