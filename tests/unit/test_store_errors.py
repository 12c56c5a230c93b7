"""A job that fails because the object store did not answer says so, with exit 75, not a
Spark stack trace (issue 17); any other failure keeps its traceback."""

from __future__ import annotations

import socket

import pytest

from dlpipe.core.args import run_main
from dlpipe.core.errors import STORE_DOWN_EXIT, store_unreachable
from tests.unit.cutting_server import cutting_server


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def client_of(url: str):
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=url, aws_access_key_id="k", aws_secret_access_key="s",
                        region_name="us-east-1", config=Config(retries={"max_attempts": 1}))


def boto3_failure() -> Exception:
    """What a real boto3 client raises for a store that is down."""
    with pytest.raises(Exception) as raised:
        client_of(f"http://127.0.0.1:{closed_port()}").list_buckets()
    return raised.value


def test_a_store_killed_mid_request_or_mid_answer_is_named_too():
    """CI at bccbb43: a training run whose store was killed mid-epoch failed with an error that
    was not taken for the store. botocore says "closed before a valid response" for a request
    the store dropped, and "reading from response stream" for an answer cut off."""
    with cutting_server(b"", cut=3) as url, pytest.raises(Exception) as dropped:
        client_of(url).list_buckets()
    assert "Connection was closed before" in (store_unreachable(dropped.value) or ""), dropped.value
    with cutting_server(b"x" * 1000, cut=1) as url:
        body = client_of(url).get_object(Bucket="b", Key="k")["Body"]
        with pytest.raises(Exception) as cut:
            body.read()
    assert "reading from response stream" in (store_unreachable(cut.value) or ""), cut.value
    with cutting_server(b"x" * 1000, cut=1) as url:  # read in chunks, the cut shows at the end
        body = client_of(url).get_object(Bucket="b", Key="k")["Body"]
        with pytest.raises(Exception) as short:
            list(body.iter_chunks(100))
    assert "total bytes expected is 1000" in (store_unreachable(short.value) or ""), short.value
    starting = RuntimeError("botocore.exceptions.ClientError: An error occurred "
                            "(XMinioServerNotInitialized) when calling the PutObject operation "
                            "(reached max retries: 7): Server not initialized yet, please try again.")
    assert "Server not initialized" in (store_unreachable(starting) or "")


def test_boto3_and_its_text_inside_a_spark_error_are_named_with_the_fix():
    direct = store_unreachable(boto3_failure())
    assert direct is not None and "Could not connect to the endpoint URL" in direct
    assert "fix: check the store" in direct and "run the same command again" in direct
    # Spark carries a worker's traceback as the text of its own exception
    spark_like = RuntimeError(f"[PYTHON_EXCEPTION] An exception was thrown from the Python "
                              f"worker: Traceback ...\nbotocore.exceptions.EndpointConnectionError: "
                              f"{boto3_failure()}")
    assert "Could not connect" in (store_unreachable(spark_like) or "")
    s3a = RuntimeError("org.apache.hadoop.fs.s3a.AWSClientIOException: getFileStatus on s3a://b/k:"
                       " software.amazon.awssdk.core.exception.SdkClientException: Unable to execute"
                       " HTTP request: Connect to 127.0.0.1:9000 failed: Connection refused")
    assert "Unable to execute HTTP request" in (store_unreachable(s3a) or "")
    chained = ValueError("while publishing")
    chained.__cause__ = boto3_failure()
    assert store_unreachable(chained) is not None


def test_other_failures_are_not_taken_for_a_store_outage():
    assert store_unreachable(ValueError("shapes (3,) and (4,) not aligned")) is None
    assert store_unreachable(KeyError("label")) is None
    refused = RuntimeError("An error occurred (AccessDenied) when calling the PutObject operation "
                           "(reached max retries: 7): Access Denied.")
    assert store_unreachable(refused) is None, "a store that answers no is not down"


def test_run_main_exits_75_with_the_message_and_reraises_a_bug(capsys):
    failure = boto3_failure()

    def down() -> int:
        raise RuntimeError("job aborted") from failure

    with pytest.raises(SystemExit) as exited:
        run_main(down, prog="export")
    assert exited.value.code == STORE_DOWN_EXIT
    err = capsys.readouterr().err
    assert err.startswith("export: error: the object store did not answer") and "Traceback" not in err

    def bug() -> int:
        raise ZeroDivisionError("a bug")

    with pytest.raises(ZeroDivisionError):
        run_main(bug, prog="export")
