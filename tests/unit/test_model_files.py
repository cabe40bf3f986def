"""A base model in S3 is fetched once per node into a verified local copy (moto's S3
server on 127.0.0.1 holding the tiny demo base): staged, checked, renamed; never used
half-downloaded; a wrong source fails naming it."""

from __future__ import annotations

from pathlib import Path

import pytest

from deployments.config import ModelConfig
from deployments.errors import ModelUnavailable
from deployments.model_files import COMPLETE, local_model_path
from factory.demo_assets import SECOND_BASE_DIR


@pytest.fixture
def s3_model(s3_bucket, demo_assets):
    """The second demo base under s3://<bucket>/wide/, plus a pickle the fetch must skip."""
    import boto3

    endpoint, bucket = s3_bucket
    client = boto3.client("s3", endpoint_url=endpoint)
    local = demo_assets / SECOND_BASE_DIR
    for path in local.iterdir():
        client.upload_file(str(path), bucket, f"wide/{path.name}")
    client.put_object(Bucket=bucket, Key="wide/pytorch_model.bin", Body=b"\x80\x04not loaded")
    return ModelConfig(source=f"s3://{bucket}/wide/", served_name="wide", s3_endpoint_url=endpoint), local, client, bucket


def test_an_s3_base_is_copied_once_with_every_safetensors_file_and_no_pickle(s3_model, tmp_path):
    model, local, _, _ = s3_model
    folder = Path(local_model_path(model, tmp_path / "cache"))
    assert folder.is_relative_to(tmp_path / "cache")
    assert {p.name for p in folder.iterdir()} == {p.name for p in local.iterdir()} | {COMPLETE}
    assert (local / "model.safetensors").read_bytes() == (folder / "model.safetensors").read_bytes()
    mtime = (folder / COMPLETE).stat().st_mtime_ns
    assert local_model_path(model, tmp_path / "cache") == str(folder)  # a second replica on the node reuses it
    assert (folder / COMPLETE).stat().st_mtime_ns == mtime


def test_a_copy_without_its_completion_record_is_never_used_and_is_fetched_again(s3_model, tmp_path):
    model, local, _, _ = s3_model
    folder = Path(local_model_path(model, tmp_path / "cache"))
    (folder / COMPLETE).unlink()  # as if the process died before the record
    (folder / "model.safetensors").write_bytes(b"half")
    assert local_model_path(model, tmp_path / "cache") == str(folder)
    assert (folder / "model.safetensors").read_bytes() == (local / "model.safetensors").read_bytes()


def test_a_changed_model_in_the_bucket_gets_a_new_copy(s3_model, tmp_path):
    model, _, client, bucket = s3_model
    first = local_model_path(model, tmp_path / "cache")
    client.put_object(Bucket=bucket, Key="wide/generation_config.json", Body=b"{}")
    assert local_model_path(model, tmp_path / "cache") != first


def test_the_ingress_fetches_only_what_a_tokenizer_reads(s3_model, tmp_path):
    model, _, _, _ = s3_model
    folder = Path(local_model_path(model, tmp_path / "cache", weights=False))
    assert (folder / "tokenizer.json").is_file() and not list(folder.glob("*.safetensors"))


@pytest.mark.parametrize("source, message", [
    ("s3://{bucket}/nothing-here/", "is empty or does not exist"),
    ("s3://no-such-bucket-lorafleet/x/", "cannot list the base model s3://no-such-bucket-lorafleet/x/"),
])
def test_a_wrong_s3_source_fails_naming_it(s3_model, tmp_path, source, message):
    model, _, _, bucket = s3_model
    wrong = model.model_copy(update={"source": source.format(bucket=bucket)})
    with pytest.raises(ModelUnavailable, match=message.format(bucket=bucket)):
        local_model_path(wrong, tmp_path / "cache")


def test_a_local_folder_is_used_where_it_is(demo_assets, tmp_path):
    model = ModelConfig(source=str(demo_assets / "base"), served_name="b")
    assert local_model_path(model, tmp_path / "cache") == str(demo_assets / "base")
    assert not (tmp_path / "cache").exists()
