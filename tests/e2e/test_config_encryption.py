"""`{cipher}` values and `/encrypt`, `/decrypt` against Spring Security's own implementation:
the real `spring-security-crypto` jar (the one Spring Cloud Config's `encrypt.key` uses, for
both generations: 6.5 with Boot 3.5, 5.7 with Boot 2.7) encrypts values that Ferry must serve
decrypted, and decrypts what Ferry's `/encrypt` returns. The jar comes from Maven Central
through `mvn` into the local repository named by `FERRY_M2_REPO` (default `~/.m2/repository`),
or from `SPRING_CRYPTO_JAR`. Skipped only when `java` is missing."""

import base64
import os
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
from config.spring import ConfigClient

from test_config_clients import js_load

HELPER = Path(__file__).resolve().parent / "java" / "SpringCrypto.java"
GENERATIONS = {"boot-3.5": "6.5.5", "boot-2.7": "5.7.14"}


def crypto_jar(version: str) -> Path:
    configured = os.environ.get("SPRING_CRYPTO_JAR")
    if configured:
        return Path(configured)
    repo = Path(os.environ.get("FERRY_M2_REPO", Path.home() / ".m2" / "repository"))
    jar = repo / "org/springframework/security/spring-security-crypto" / version / \
        f"spring-security-crypto-{version}.jar"
    if not jar.exists():
        assert shutil.which("mvn"), f"{jar} is missing and mvn is not installed to fetch it"
        subprocess.run(["mvn", "-q", "-B", f"-Dmaven.repo.local={repo}", "dependency:get",
                        f"-Dartifact=org.springframework.security:spring-security-crypto:{version}",
                        "-Dtransitive=false"], check=True, capture_output=True, timeout=300)
    assert jar.exists(), f"mvn did not fetch {jar}"
    return jar


class SpringCrypto:
    """`Encryptors.text(key, salt)` in a JVM, one request per line."""

    def __init__(self, jar: Path, key: str, salt: str):
        self.process = subprocess.Popen(["java", "-cp", str(jar), str(HELPER), key, salt],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def _ask(self, line: str) -> tuple[str, str]:
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        status, _, value = self.process.stdout.readline().strip().partition(" ")
        assert status in ("OK", "ERR"), f"the Java helper failed: {status!r}"
        return status, base64.b64decode(value).decode() if status == "OK" else value

    def encrypt(self, text: str) -> str:
        status, value = self._ask("E " + base64.b64encode(text.encode()).decode())
        assert status == "OK", value
        return value

    def decrypt(self, cipher_text: str) -> tuple[str, str]:
        return self._ask("D " + cipher_text)

    def close(self):
        self.process.stdin.close()
        self.process.wait(timeout=30)


@pytest.fixture(params=sorted(GENERATIONS))
def generation(request):
    if shutil.which("java") is None:
        pytest.skip("java is not installed")
    return request.param, crypto_jar(GENERATIONS[request.param])


TEXTS = ["hunter2", "", "p\u00e4ss w\u00f6rd \u20ac", "sixteen bytes!!!", "x" * 300]


def test_values_encrypted_by_spring_are_served_and_ferrys_decrypt_in_java(start_ferry, tmp_path, generation):
    name, jar = generation
    key, salt = "Ferry-s3cret key", "cafebabe" if name == "boot-3.5" else "deadbeef"
    java = SpringCrypto(jar, key, salt)
    try:
        repo = tmp_path / "config"
        repo.mkdir()
        (repo / "orders.yml").write_text(
            f"db:\n  password: '{{cipher}}{java.encrypt('hunter2')}'\n  user: orders\n"
            f"wrong: '{{cipher}}{encrypted_with_another_key(jar, salt)}'\n")
        (repo / "orders.properties").write_text(f"token={{cipher}}{{key:k}}{java.encrypt('t0ken')}\n")
        args = ["--config-repo", str(repo), "--encrypt-key", key]
        ferry = start_ferry(*args, *([] if salt == "deadbeef" else ["--encrypt-salt", salt]))
        base = f"http://127.0.0.1:{ferry.config_port}"

        # Java-encrypted values reach both clients decrypted; one for another key is invalid.
        js = js_load(ferry, "orders", ["default"])["properties"]
        assert js["db.password"] == "hunter2" and js["token"] == "t0ken"
        assert js["invalid.wrong"] == "<n/a>" and "wrong" not in js
        py = ConfigClient(address=base, app_name="orders", profile="default", label="main", fail_fast=False)
        py.get_config()
        assert py.get("db.password") == "hunter2" and py.get("db.user") == "orders"
        assert "db.password: hunter2" in httpx.get(f"{base}/orders-default.properties").text

        for text in TEXTS:
            # Ferry's /encrypt, Java's decrypt; Java's encrypt, Ferry's /decrypt.
            encrypted = httpx.post(f"{base}/encrypt", content=text.encode(),
                                   headers={"Content-Type": "text/plain"})
            if text == "":
                assert encrypted.status_code == 400  # Spring: the request body is required
                continue
            assert encrypted.status_code == 200, encrypted.text
            assert java.decrypt(encrypted.text) == ("OK", text)
            decrypted = httpx.post(f"{base}/decrypt", content=java.encrypt(text).encode(),
                                   headers={"Content-Type": "text/plain"})
            assert (decrypted.status_code, decrypted.text) == (200, text)
        assert httpx.get(f"{base}/encrypt/status").json() == {"status": "OK"}

        # Cipher texts Java refuses are refused by Ferry with the status Spring's controller
        # gives that exception: 400 for IllegalArgument/IllegalState, 500 for the rest.
        iv = "00112233445566778899aabbccddeeff"
        for bad in ["zz", "abc", "0011", iv, iv + "00", iv + "00" * 16, java.encrypt("x").upper()]:
            status, value = java.decrypt(bad)
            answer = httpx.post(f"{base}/decrypt", content=bad.encode(), headers={"Content-Type": "text/plain"})
            if status == "OK":
                assert (answer.status_code, answer.text) == (200, value), bad
            elif value in ("java.lang.IllegalArgumentException", "java.lang.IllegalStateException"):
                assert answer.status_code == 400 and answer.json()["status"] == "INVALID", (bad, value)
            else:
                assert answer.status_code == 500, (bad, value, answer.text)
    finally:
        java.close()


def encrypted_with_another_key(jar: Path, salt: str) -> str:
    other = SpringCrypto(jar, "another key", salt)
    try:
        return other.encrypt("not for this key")
    finally:
        other.close()


def test_without_a_key_cipher_values_are_invalid_and_the_endpoints_fail(start_ferry, tmp_path):
    repo = tmp_path / "config"
    repo.mkdir()
    (repo / "orders.yml").write_text("password: '{cipher}00112233445566778899aabbccddeeff'\nuser: u\n")
    ferry = start_ferry("--config-repo", str(repo))
    base = f"http://127.0.0.1:{ferry.config_port}"
    source = httpx.get(f"{base}/orders/default").json()["propertySources"][0]["source"]
    assert source == {"user": "u", "invalid.password": "<n/a>"}
    assert httpx.post(f"{base}/encrypt", content=b"x", headers={"Content-Type": "text/plain"}).status_code == 500
    assert httpx.get(f"{base}/key").status_code == 404
    # `--config-decrypt false` hands the values over as written.
    verbatim = start_ferry("--config-repo", str(repo), "--config-decrypt", "false")
    py = ConfigClient(address=f"http://127.0.0.1:{verbatim.config_port}", app_name="orders",
                      profile="default", label="main", fail_fast=False)
    py.get_config()
    assert py.get("password") == "{cipher}00112233445566778899aabbccddeeff"
