"""`{{secrets.NAME}}` placeholders (docs/contract.md §5)."""

from pathlib import Path

import pytest

from servicenow_worker.errors import InputError
from servicenow_worker.secrets import ResolvedSecrets, SecretStore, resolve_placeholders


def resolve(value: object, store: SecretStore) -> tuple[object, ResolvedSecrets]:
    used = ResolvedSecrets()
    return resolve_placeholders(value, store, used, "authentication"), used


class TestPlaceholders:
    def test_resolved_from_environment_inside_nested_values(self) -> None:
        """Placeholders in nested objects, lists and the middle of strings are replaced."""
        store = SecretStore({"snUser": "camunda", "TOKEN": "t0k"})
        value, used = resolve(
            {"username": "{{secrets.snUser}}", "notes": ["Bearer {{ secrets.TOKEN }}!"]}, store
        )
        assert value == {"username": "camunda", "notes": ["Bearer t0k!"]}
        assert used.values == {"camunda", "t0k"}

    def test_file_used_when_environment_empty(self, tmp_path: Path) -> None:
        """An empty variable counts as unset; the file's one trailing newline is dropped."""
        (tmp_path / "snPwd").write_text("line1\nline2\n\n", encoding="utf-8")
        store = SecretStore({"snPwd": ""}, tmp_path)
        value, _ = resolve("{{secrets.snPwd}}", store)
        assert value == "line1\nline2\n"

    def test_missing_secret_names_it_and_where_to_set_it(self, tmp_path: Path) -> None:
        """The message names the secret and the places looked in, never a value."""
        store = SecretStore({}, tmp_path, env_prefix="SECRET_")
        with pytest.raises(InputError) as caught:
            resolve({"password": "{{secrets.snPwd}}"}, store)
        assert caught.value.field == "authentication.password"
        assert "snPwd" in caught.value.message
        assert "SECRET_snPwd" in caught.value.message
        assert str(tmp_path / "snPwd") in caught.value.message

    def test_missing_secret_without_directory_names_only_the_variable(self) -> None:
        """Without SECRETS_DIR the message sends the operator to the variable, and nowhere else."""
        with pytest.raises(InputError) as caught:
            resolve("{{secrets.snPwd}}", SecretStore({}))
        assert caught.value.message == (
            "authentication refers to secret snPwd, which is missing or empty: "
            "set the environment variable SECRET_snPwd"
        )

    def test_missing_secret_in_a_list_names_its_position(self) -> None:
        """The field path of a placeholder inside a list says which element it is."""
        store = SecretStore({"ok": "v"})
        with pytest.raises(InputError) as caught:
            resolve_placeholders(
                {"tags": ["{{secrets.ok}}", "{{secrets.gone}}"]},
                store,
                ResolvedSecrets(),
                "payload",
            )
        assert caught.value.field == "payload.tags[1]"

    def test_file_is_read_as_utf8(self, tmp_path: Path) -> None:
        """A secret file holds UTF-8 text, as Docker and Kubernetes write it."""
        (tmp_path / "pw").write_bytes("pä€\n".encode())
        value, used = resolve("{{secrets.pw}}", SecretStore({}, tmp_path))
        assert value == "pä€"
        assert used.values == {"pä€"}

    def test_empty_file_is_missing(self, tmp_path: Path) -> None:
        """A secret that is empty everywhere is missing."""
        (tmp_path / "empty").write_text("\n", encoding="utf-8")
        with pytest.raises(InputError, match="secret empty"):
            resolve("{{secrets.empty}}", SecretStore({}, tmp_path))

    def test_names_cannot_escape_the_directory(self, tmp_path: Path) -> None:
        """Only [A-Za-z_][A-Za-z0-9_]* names are placeholders, so no path can be formed."""
        value, used = resolve("{{secrets.../etc/passwd}}", SecretStore({}, tmp_path))
        assert value == "{{secrets.../etc/passwd}}"
        assert not used.values


class TestMask:
    def test_values_with_quotes_newlines_and_unicode_are_masked(self) -> None:
        """Every used value is masked wherever it appears, longest first."""
        used = ResolvedSecrets({'p"w\nö€', "ab", "abc"})
        assert used.mask('x p"w\nö€ abcd ab') == "x *** ***d ***"

    def test_secret_inside_a_longer_one_leaves_no_character_unmasked(self) -> None:
        """Longest first, whatever the alphabetical order: "word" must not be masked inside
        "sword" first, which would leave the "s" of the longer secret in the text."""
        used = ResolvedSecrets({"word", "sword"})
        assert used.mask("sword word") == "*** ***"


def test_mask_data_keeps_the_shape_and_masks_every_string() -> None:
    """Failure variables keep what they held; only the secret values turn into the mask."""
    used = ResolvedSecrets({"s3cr3t"})
    data = {"said": ["x s3cr3t", 1, {"s3cr3t": "k"}], "none": None, "n": 2.5}
    assert used.mask_data(data) == {"said": ["x ***", 1, {"***": "k"}], "none": None, "n": 2.5}
