import json

import pytest
from batchline.settings import SettingsError, load_settings, runtime_environment, settings_from_cdk_json


def test_defaults_are_the_batch_api_limits():
    settings = load_settings()
    assert (settings.shard_max_requests, settings.shard_max_bytes) == (50_000, 209_715_200)


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"shard_max_requests": 60_000}, "shard_max_requests"),
        ({"map_max_concurrency": 0}, "map_max_concurrency"),
        ({"functions": {"memory_mb": 64}}, "functions.memory_mb"),
        ({"no_such_setting": 1}, "no_such_setting"),
        ({"retention": {"noncurrent_days": 0}}, "retention.noncurrent_days"),
        ({"retention": {"input_days": -1}}, "retention.input_days"),
        ({"retention": {"incomplete_upload_days": 400}}, "retention.incomplete_upload_days"),
    ],
)
def test_a_wrong_setting_fails_with_its_name(values, named):
    with pytest.raises(SettingsError, match=named.replace(".", r"\.")):
        load_settings(values)


def test_the_repository_cdk_json_holds_valid_settings():
    from pathlib import Path

    settings = settings_from_cdk_json(Path(__file__).resolve().parents[2] / "cdk.json")
    assert settings.local_poll_seconds >= 1


def test_a_missing_environment_variable_is_named(monkeypatch):
    runtime_environment.cache_clear()
    monkeypatch.setenv("BATCHLINE_SETTINGS", json.dumps({}))
    monkeypatch.setenv("TABLE_NAME", "t")
    monkeypatch.delenv("OUTPUT_BUCKET", raising=False)
    with pytest.raises(SettingsError, match="OUTPUT_BUCKET"):
        runtime_environment()
    runtime_environment.cache_clear()


def test_a_worker_concurrency_above_its_reserve_is_refused_naming_both():
    with pytest.raises(SettingsError, match=r"realtime.*max_concurrency \(8\) exceeds reserved_concurrency \(4\)"):
        load_settings({"realtime": {"max_concurrency": 8, "reserved_concurrency": 4}})


def test_buckets_keep_uploads_and_expire_old_versions_after_30_days_by_default():
    retention = load_settings().retention
    assert (retention.input_days, retention.noncurrent_days, retention.incomplete_upload_days) == (None, 30, 1)


def test_uploads_may_not_expire_before_the_working_files_of_their_job():
    with pytest.raises(SettingsError, match=r"input_days \(10\) is below staging_days \(14\)"):
        load_settings({"retention": {"input_days": 10}})
    assert load_settings({"retention": {"input_days": 14}}).retention.input_days == 14


KEY_ARN = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"


def test_no_customer_managed_key_by_default():
    assert not load_settings().encryption.customer_managed


@pytest.mark.parametrize(
    ("encryption", "message"),
    [
        ({"kms_key_arn": "alias/batchline"}, r"encryption\.kms_key_arn: .*not a KMS key ARN"),
        ({"kms_key_arn": KEY_ARN.replace("us-east-1", "eu-west-1")}, r"a key in eu-west-1, not in .* us-east-1"),
        ({"kms_key_arn": KEY_ARN, "create_kms_key": True}, r"encryption: .*exclude each other"),
        ({"create_kms_key": "maybe"}, r"encryption\.create_kms_key"),
    ],
)
def test_a_wrong_key_setting_fails_naming_it(encryption, message):
    with pytest.raises(SettingsError, match=message):
        load_settings({"encryption": encryption})


def test_a_key_in_the_stacks_region_is_taken_by_its_arn():
    assert load_settings({"encryption": {"kms_key_arn": KEY_ARN}}).encryption.customer_managed
