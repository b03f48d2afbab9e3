"""vd.settings: the one module that reads settings from the environment, at call time."""

from __future__ import annotations

import ast
from pathlib import Path

from vd import paths, settings

ROOT = Path(__file__).resolve().parents[1]


def _environment_reads(tree: ast.AST) -> list[int]:
    """Lines that read one variable: os.environ.get(...), os.getenv(...), os.environ[...] (load).
    Copying the whole environment for a child process, or setting a variable, is not reading a setting."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            f = node.func
            if f.attr == "get" and ast.unparse(f.value) == "os.environ":
                lines.append(node.lineno)
            if f.attr == "getenv" and ast.unparse(f.value) == "os":
                lines.append(node.lineno)
        if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load):
            if ast.unparse(node.value) == "os.environ":
                lines.append(node.lineno)
    return lines


def test_only_the_settings_module_reads_environment_variables():
    found = []
    for folder in ("vd", "commands", "cache"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel == "vd/settings.py":
                continue
            for line in _environment_reads(ast.parse(path.read_text(), rel)):
                found.append(f"{rel}:{line}")
    assert not found, f"read these through vd.settings: {found}"


def test_the_scan_finds_each_way_of_reading_a_variable():
    source = 'import os\na = os.environ.get("A")\nb = os.getenv("B")\nc = os.environ["C"]\nos.environ["D"] = "1"\n'
    assert _environment_reads(ast.parse(source)) == [2, 3, 4]


def test_settings_are_read_when_called(monkeypatch, tmp_path):
    monkeypatch.delenv("VD_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert paths.cache_dir() == tmp_path / "xdg" / "vd"
    monkeypatch.setenv("VD_CACHE_DIR", str(tmp_path / "c"))
    assert paths.cache_dir() == tmp_path / "c"
    monkeypatch.delenv("VD_MODELS_DIR", raising=False)
    assert paths.models_dir() == tmp_path / "c" / "models"
    monkeypatch.setenv("VD_MODELS_DIR", "~/weights")
    assert paths.models_dir() == Path.home() / "weights"


def test_true_words_and_false_words(monkeypatch):
    for word, expected in [("1", True), ("YES", True), (" on ", True), ("0", False), ("", False), ("maybe", False)]:
        monkeypatch.setenv("VD_OFFLINE", word)
        assert settings.offline() is expected, word
    monkeypatch.delenv("VD_FETCH_FSYNC", raising=False)
    assert settings.fetch_fsync()
    for word in ("0", "off", "No"):
        monkeypatch.setenv("VD_FETCH_FSYNC", word)
        assert not settings.fetch_fsync(), word


def test_numbers_fall_back_to_their_default(monkeypatch):
    monkeypatch.setenv("VD_FETCH_TIMEOUT", "12.5")
    assert settings.fetch_timeout() == 12.5
    monkeypatch.setenv("VD_FETCH_TIMEOUT", "soon")
    assert settings.fetch_timeout() == 30.0
    monkeypatch.setenv("VD_FETCH_RETRIES", "2")
    assert settings.fetch_retries() == 2


def test_hugging_face_token_and_its_file(monkeypatch, tmp_path):
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert settings.hf_token() is None
    assert settings.hf_token_path() == tmp_path / "hf" / "token"
    monkeypatch.setenv("HUGGING_FACE_HUB_TOKEN", " old ")
    assert settings.hf_token() == "old"
    monkeypatch.setenv("HF_TOKEN", "new")
    assert settings.hf_token() == "new"


def test_ca_bundle_names_only_an_existing_file(monkeypatch, tmp_path):
    for name in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "missing.pem"))
    assert settings.ca_bundle() is None
    (tmp_path / "ca.pem").write_text("x")
    monkeypatch.setenv("CURL_CA_BUNDLE", str(tmp_path / "ca.pem"))
    assert settings.ca_bundle() == str(tmp_path / "ca.pem")
