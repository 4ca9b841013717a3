"""S3 strategy: real boto3 against moto's threaded server (real HTTP S3 protocol)."""

import io
import os

import boto3
import botocore.exceptions
import pytest

from .conftest import stored

pytestmark = pytest.mark.django_db(transaction=True)

MIB = 1024 * 1024
BIG = 20 * MIB


@pytest.fixture
def s3(moto_url):
    client = boto3.client(
        "s3",
        endpoint_url=moto_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    client.create_bucket(Bucket="media")
    yield client
    for page in client.get_paginator("list_objects_v2").paginate(Bucket="media"):
        for obj in page.get("Contents", []):
            client.delete_object(Bucket="media", Key=obj["Key"])
    client.delete_bucket(Bucket="media")


def test_put_get_upload_download(ml, live_org, s3, tmp_path, errors):
    metered = ml.s3(s3, customer="tenant-1", name="storage")
    assert metered is s3

    small = b"x" * 1234
    result = s3.put_object(Bucket="media", Key="small.txt", Body=small, ContentType="text/plain")
    assert result["ResponseMetadata"]["HTTPStatusCode"] == 200

    big_path = tmp_path / "big.bin"
    big_path.write_bytes(os.urandom(BIG))
    s3.upload_file(str(big_path), "media", "big.bin", ExtraArgs={"ContentType": "video/mp4"})

    body = s3.get_object(Bucket="media", Key="small.txt")["Body"].read()
    assert body == small

    out = tmp_path / "copy.bin"
    s3.download_file("media", "big.bin", str(out))
    assert out.read_bytes() == big_path.read_bytes()

    s3.upload_fileobj(io.BytesIO(b"y" * 777), "media", "fileobj.bin")
    target = io.BytesIO()
    s3.download_fileobj("media", "fileobj.bin", target)
    assert target.getvalue() == b"y" * 777

    assert ml.flush(timeout=10)
    assert errors == []
    events = stored(live_org, name="storage")
    summary = [
        (e.metadata["operation"], e.metadata["key"], e.metadata["bytes"], e.metadata["objects"])
        for e in events
    ]
    assert summary == [
        ("upload", "small.txt", 1234, 1),
        ("upload", "big.bin", BIG, 1),
        ("download", "small.txt", 1234, 0),
        ("download", "big.bin", BIG, 0),
        ("upload", "fileobj.bin", 777, 1),
        ("download", "fileobj.bin", 777, 0),
    ]
    assert all(e.metadata["bucket"] == "media" for e in events)
    assert all(e.metadata["strategy"] == "s3" for e in events)
    assert all(e.external_customer_id == "tenant-1" for e in events)
    assert events[0].metadata["content_type"] == "text/plain"
    assert events[1].metadata["content_type"] == "video/mp4"
    assert events[1].metadata["parts"] == 3  # 8 + 8 + 4 MiB at boto3's default 8 MiB chunks
    assert events[2].metadata["content_type"] == "text/plain"
    # the sizes stored are the objects' sizes in S3
    for key, size in (("small.txt", 1234), ("big.bin", BIG), ("fileobj.bin", 777)):
        assert s3.head_object(Bucket="media", Key=key)["ContentLength"] == size


def test_failures_propagate_unchanged_and_are_not_metered(ml, live_org, s3, tmp_path):
    ml.s3(s3, customer="tenant-1", name="storage")
    with pytest.raises(s3.exceptions.NoSuchKey):
        s3.get_object(Bucket="media", Key="missing")
    with pytest.raises(botocore.exceptions.ClientError) as info:
        s3.download_file("media", "missing", str(tmp_path / "x"))
    assert info.value.response["Error"]["Code"] == "404"
    with pytest.raises(s3.exceptions.NoSuchBucket):
        s3.put_object(Bucket="nope", Key="k", Body=b"abc")
    assert ml.flush(timeout=10)
    assert stored(live_org) == []


def test_manual_multipart_counts_completed_parts_once(ml, live_org, s3):
    ml.s3(s3, customer="tenant-2", name="storage")
    upload = s3.create_multipart_upload(Bucket="media", Key="manual.bin")
    part = b"p" * (5 * MIB)
    etag1 = s3.upload_part(
        Bucket="media", Key="manual.bin", UploadId=upload["UploadId"], PartNumber=1, Body=part
    )["ETag"]
    # part 1 uploaded again (a retry by the application): counted once
    etag1 = s3.upload_part(
        Bucket="media", Key="manual.bin", UploadId=upload["UploadId"], PartNumber=1, Body=part
    )["ETag"]
    etag2 = s3.upload_part(
        Bucket="media", Key="manual.bin", UploadId=upload["UploadId"], PartNumber=2, Body=b"tail"
    )["ETag"]
    s3.complete_multipart_upload(
        Bucket="media",
        Key="manual.bin",
        UploadId=upload["UploadId"],
        MultipartUpload={
            "Parts": [{"PartNumber": 1, "ETag": etag1}, {"PartNumber": 2, "ETag": etag2}]
        },
    )
    aborted = s3.create_multipart_upload(Bucket="media", Key="aborted.bin")
    s3.upload_part(
        Bucket="media", Key="aborted.bin", UploadId=aborted["UploadId"], PartNumber=1, Body=part
    )
    s3.abort_multipart_upload(Bucket="media", Key="aborted.bin", UploadId=aborted["UploadId"])
    assert ml.flush(timeout=10)
    (event,) = stored(live_org, name="storage")
    assert event.metadata["bytes"] == 5 * MIB + 4
    assert (
        event.metadata["bytes"] == s3.head_object(Bucket="media", Key="manual.bin")["ContentLength"]
    )
    assert (event.metadata["objects"], event.metadata["parts"]) == (1, 2)
