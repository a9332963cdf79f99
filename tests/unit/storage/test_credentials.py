"""Storage secrets: Seldon's rclone remotes, read from files."""

import pytest

from inferline.protocol.errors import InvalidModelURI
from inferline.storage.credentials import remote_config, secret_name, storage_secret

SELDON_YAML = """\
type: s3
name: s3
parameters:
  provider: minio
  env_auth: false
  access_key_id: minioadmin
  secret_access_key: minioadmin
  endpoint: http://127.0.0.1:9000
"""


@pytest.fixture
def secrets(tmp_path, monkeypatch):
    folder = tmp_path / "secrets"
    folder.mkdir()
    monkeypatch.setenv("INFERLINE_STORAGE_SECRET_DIR", str(folder))
    return folder


def test_no_secret_means_no_config():
    assert secret_name() is None
    assert remote_config("s3") is None


def test_a_seldon_secret_file(secrets):
    (secrets / "minio-secret.yaml").write_text(SELDON_YAML)
    with storage_secret("minio-secret"):
        config = remote_config("s3")
    assert config["access_key_id"] == "minioadmin"
    assert config["endpoint"] == "http://127.0.0.1:9000"
    assert config["env_auth"] is False


def test_a_mounted_kubernetes_secret_with_several_keys(secrets):
    (secrets / "mixed").mkdir()
    (secrets / "mixed" / "s3").write_text(SELDON_YAML)
    (secrets / "mixed" / "gcs").write_text(
        'type: google cloud storage\nparameters:\n  service_account_credentials: "{}"\n'
    )
    with storage_secret("mixed"):
        assert remote_config("gs")["service_account_credentials"] == "{}"
        assert remote_config("s3")["provider"] == "minio"
        with pytest.raises(InvalidModelURI, match="no remote of type http"):
            remote_config("http")


def test_an_rclone_ini_config(secrets):
    (secrets / "rclone").write_text(
        "[store]\ntype = s3\naccess_key_id = AK\nsecret_access_key = SK\n"
    )
    with storage_secret("rclone"):
        assert remote_config("s3")["access_key_id"] == "AK"


def test_the_default_secret_comes_from_the_environment(secrets, monkeypatch):
    (secrets / "everyone.json").write_text('{"type": "s3", "access_key_id": "flat"}')
    monkeypatch.setenv("INFERLINE_STORAGE_SECRET", "everyone")
    assert remote_config("s3")["access_key_id"] == "flat"
    # Shared by every model, it need not cover every store: an http model goes without.
    assert remote_config("http") is None


def test_a_missing_secret_says_where_it_looked(secrets):
    with storage_secret("absent"), pytest.raises(InvalidModelURI, match=r"'absent' not found"):
        remote_config("s3")


def test_a_secret_without_the_folder_setting(monkeypatch):
    with storage_secret("minio"), pytest.raises(InvalidModelURI, match="SECRET_DIR is not set"):
        remote_config("s3")


def test_a_secret_name_cannot_leave_the_folder(secrets):
    with storage_secret("../etc"), pytest.raises(InvalidModelURI, match="not a valid name"):
        remote_config("s3")
