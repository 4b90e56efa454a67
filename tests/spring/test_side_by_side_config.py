"""Ferry's Config Server API beside the real Spring Cloud Config Server (samples/boot3/
config-server, Spring Cloud Config 4.3), both serving the same repository: the sample folder
(native backend) and a git repository made from it (branches `main` and `stable`, tag `v1`,
and a commit on `main` that changes a value).

For every app, profile list and label the Environment JSON and the rendered `.yml`,
`.properties` and `.json` must be equal once the deliberate differences (README, "Differences
from the real servers") are normalized; rendered documents are compared byte for byte.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import httpx
import pytest

from servers import ROOT, Processes, git

SAMPLE_REPO = (ROOT / "samples" / "config-repo").resolve()
APPS = ("orders", "application", "pricing")
PROFILES = ("default", "dev", "prod", "dev,prod", "prod,dev")
FORMATS = ("yml", "properties", "json")


# === the two servers ===


class Pair:
    """The real Config Server and a ferry serving the same repository."""

    def __init__(self, real_port: int, ferry_port: int):
        self.real = f"http://127.0.0.1:{real_port}"
        self.ferry = f"http://127.0.0.1:{ferry_port}"

    def both(self, path: str) -> tuple[httpx.Response, httpx.Response]:
        return (httpx.get(self.real + path, timeout=30), httpx.get(self.ferry + path, timeout=30))


def serve(where: Path, repo: Path, real_props: dict):
    """Yields the pair serving `repo`; stops both afterwards (their logs are printed when
    they fail to start)."""
    processes = Processes(where)
    try:
        real = processes.jvm("boot3", "config-server", real_props)
        ferry = processes.ferry("--config-repo", str(repo))
        yield Pair(real.port, ferry.config_port)
    except BaseException:
        print(processes.report())
        raise
    finally:
        processes.close()


@pytest.fixture(scope="module")
def native_pair(tmp_path_factory):
    yield from serve(tmp_path_factory.mktemp("config-native"), SAMPLE_REPO, {
        "spring.profiles.active": "native",
        "spring.cloud.config.server.native.search-locations": f"file:{SAMPLE_REPO}/",
    })


def sample_git_repo(repo: Path, branch: str) -> str:
    """The sample folder's files committed to a new git repository on `branch`; returns the
    commit id."""
    repo.mkdir()
    for source in SAMPLE_REPO.iterdir():
        if source.suffix in (".yml", ".properties"):
            shutil.copy(source, repo / source.name)
    git(repo, "init", "-q", "-b", branch)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "the sample repository")
    return git(repo, "rev-parse", "HEAD")


def make_git_repo(where: Path) -> dict[str, str]:
    """The sample folder as a git repository: `stable` and tag `v1` at the first commit,
    `main` one commit further (orders-dev's pool size 2 -> 4). Returns label -> commit."""
    repo = where / "config-git"
    first = sample_git_repo(repo, "main")
    git(repo, "branch", "stable")
    git(repo, "tag", "v1")
    dev = repo / "orders-dev.yml"
    dev.write_text(dev.read_text().replace("max-size: 2\n", "max-size: 4\n"))
    git(repo, "commit", "-q", "-am", "orders-dev: a bigger pool")
    return {"main": git(repo, "rev-parse", "HEAD"), "stable": first, "v1": first, first: first}


@pytest.fixture(scope="module")
def git_pair(tmp_path_factory):
    where = tmp_path_factory.mktemp("config-git")
    labels = make_git_repo(where)
    repo = where / "config-git"
    for pair in serve(where, repo, {
        "spring.profiles.active": "git",
        "spring.cloud.config.server.git.uri": f"file://{repo}",
        "spring.cloud.config.server.git.default-label": "main",
    }):
        pair.labels = labels
        yield pair


# === normalizing ===

# The name Spring Boot gives one document of a multi-document YAML file. The real server
# shows Boot's own description ("Config resource 'file [/repo/application.yml]' via location
# 'file:/repo/' (document #0)"; from git the same, garbled, behind the repository URI); Ferry
# shows "<file URI> (document #0)". Deliberate (README): the name is a label only.
MULTI_DOCUMENT_NAME = re.compile(r"^.*Config resource 'file \[(?P<path>[^\]']+)\]?' via location '[^']*' "
                                 r"\(document #(?P<n>\d+)\)$")


def deliberate_environment(document: dict) -> dict:
    for source in document.get("propertySources", []):
        match = MULTI_DOCUMENT_NAME.match(source["name"])
        if match:
            source["name"] = f"<multi-document {Path(match['path']).name} #{match['n']}>"
        else:
            source["name"] = re.sub(r"^(.*/)?([^/]+) \(document #(\d+)\)$",
                                    r"<multi-document \2 #\3>", source["name"])
    return document


# The last path segment of a rendered document: `{application}-{profiles}.{extension}`.
RENDERED = re.compile(r"^.+-.+\.(?P<extension>yml|yaml|properties|json)$")


def compare(pair: Pair, path: str) -> str | None:
    """None when both servers answer `path` alike after normalizing, else a description."""
    real, ferry = pair.both(path)
    if real.status_code != ferry.status_code:
        return f"{path}: status real {real.status_code}, ferry {ferry.status_code}\n  real: {real.text[:300]}\n  ferry: {ferry.text[:300]}"
    if real.status_code != 200:
        # Error bodies differ deliberately (Spring's has a timestamp and the path; Ferry's a
        # message): the status is what clients read.
        return None
    real_type = real.headers["content-type"].split(";")[0]
    ferry_type = ferry.headers["content-type"].split(";")[0]
    if real_type != ferry_type:
        return f"{path}: content type real {real_type}, ferry {ferry_type}"
    rendered = RENDERED.match(path.split("?")[0].rsplit("/", 1)[-1])
    if rendered is None:
        left = json.dumps(deliberate_environment(real.json()), indent=1)
        right = json.dumps(deliberate_environment(ferry.json()), indent=1)
    else:
        # Rendered documents are compared byte for byte, key order included.
        left, right = real.text, ferry.text
    if left != right:
        return f"{path}:\n  real:  {left}\n  ferry: {right}"
    return None


def requests_for(app: str, label: str | None) -> list[str]:
    paths = []
    for profiles in PROFILES:
        paths.append(f"/{app}/{profiles}" + (f"/{label}" if label else ""))
        for extension in FORMATS:
            prefix = f"/{label}" if label else ""
            paths.append(f"{prefix}/{app}-{profiles}.{extension}")
    paths.append(f"/{app}-dev.properties?resolvePlaceholders=false")
    paths.append(f"/{app}-dev.yml?resolvePlaceholders=false")
    return paths


def assert_alike(pair: Pair, paths: list[str]) -> None:
    differences = [difference for path in paths if (difference := compare(pair, path))]
    assert not differences, "\n".join(differences)


# === equality, after normalizing ===


@pytest.mark.parametrize("app", APPS)
def test_native_folder_answers_alike(native_pair, app):
    assert_alike(native_pair, requests_for(app, None))


def test_native_labels_unknown_apps_and_errors_answer_alike(native_pair):
    assert_alike(native_pair, [
        "/main/orders-dev.json", "/master/orders-default.yaml", "/orders/dev/main",
        "/nosuch/default", "/nosuch-dev.yml", "/orders", "/orders-dev.txt",
    ])


@pytest.mark.parametrize("app", APPS)
@pytest.mark.parametrize("label", [None, "main", "stable", "v1", "first-commit"])
def test_git_repository_answers_alike(git_pair, app, label):
    if label == "first-commit":
        label = git_pair.labels["stable"]
    assert_alike(git_pair, requests_for(app, label))


def test_git_labels_see_their_own_commit(git_pair):
    """The value the `main` commit changed differs between labels on both servers, and the
    version is the label's commit id."""
    for label, size in (("main", 4), ("stable", 2), ("v1", 2)):
        for base in (git_pair.real, git_pair.ferry):
            document = httpx.get(f"{base}/orders/dev/{label}", timeout=30).json()
            assert document["version"] == git_pair.labels[label]
            assert document["propertySources"][0]["source"]["orders.db.pool.max-size"] == size


def test_git_unknown_label_is_404_on_both(git_pair):
    assert_alike(git_pair, ["/orders/dev/nosuch", "/nosuch/orders-dev.yml"])
    real, ferry = git_pair.both("/orders/dev/nosuch")
    assert real.status_code == ferry.status_code == 404


# === differences Ferry once had, each pinned by its own test ===


def test_profiles_field_is_the_requested_list(native_pair):
    real, ferry = native_pair.both("/orders/dev,prod")
    assert real.json()["profiles"] == ["dev,prod"]
    assert ferry.json()["profiles"] == real.json()["profiles"]


def test_git_state_is_an_empty_string(git_pair):
    real, ferry = git_pair.both("/orders/dev")
    assert real.json()["state"] == ""
    assert ferry.json()["state"] == real.json()["state"]


@pytest.mark.parametrize("extension", FORMATS)
def test_rendered_documents_have_the_same_key_order(native_pair, extension):
    real, ferry = native_pair.both(f"/orders-dev.{extension}")
    assert ferry.text == real.text


def test_rendered_documents_keep_the_activation_key(native_pair):
    real, ferry = native_pair.both("/orders-prod.properties")
    assert "spring.config.activate.on-profile: prod" in real.text.split("\n")
    assert "spring.config.activate.on-profile: prod" in ferry.text.split("\n")


def test_native_folder_answers_any_label(native_pair):
    """The native backend serves the folder for any label and echoes it in `label`: a
    client with `spring.cloud.config.label=release` starts against the real server."""
    assert_alike(native_pair, ["/orders/dev/release", "/release/orders-dev.yml",
                               "/orders/dev/stable,main", "/orders/dev/feature(_)x"])
    real, ferry = native_pair.both("/orders/dev/feature(_)x")
    assert real.status_code == ferry.status_code == 200
    assert ferry.json()["label"] == real.json()["label"]


@pytest.fixture(scope="module")
def labelled_folder_pair(tmp_path_factory):
    """The sample folder with label sub-folders (`release/`, `hotfix/`, and `master/`, the
    native backend's default label), each overriding some of the files."""
    where = tmp_path_factory.mktemp("config-labelled")
    repo = where / "config-labelled"
    shutil.copytree(SAMPLE_REPO, repo)
    for label, size in (("release", 21), ("hotfix", 22), ("master", 23)):
        (repo / label).mkdir()
        (repo / label / "orders-dev.yml").write_text(
            f"orders:\n  db:\n    pool:\n      max-size: {size}\n  label: {label}\n")
        (repo / label / "orders.yml").write_text(f"orders:\n  owner: {label}\nfeatures: [{label}]\n")
    (repo / "release" / "application.yml").write_text(
        "common:\n  timeout: 41\n---\nspring:\n  config:\n    activate:\n      on-profile: prod\n"
        "common:\n  timeout: 42\n")
    yield from serve(where, repo, {
        "spring.profiles.active": "native",
        "spring.cloud.config.server.native.search-locations": f"file:{repo}/",
    })


def test_native_label_sub_folders_rank_alike(labelled_folder_pair):
    """The native backend searches a label's sub-folder above the folder, a profile's files
    from every location before the plain ones, the first of several labels highest."""
    paths = []
    for label in ("release", "release,hotfix", "hotfix,release", "release,,hotfix", "main"):
        for profiles in ("default", "dev", "dev,prod"):
            paths.append(f"/orders/{profiles}/{label}")
        paths.append(f"/{label}/orders-dev,prod.properties")
        paths.append(f"/{label}/orders-dev.yml")
    paths += ["/orders/dev", "/orders-dev.json", "/application/prod/release"]
    assert_alike(labelled_folder_pair, paths)
    real, ferry = labelled_folder_pair.both("/orders/dev/release")
    assert real.json()["propertySources"][0]["source"]["orders.label"] == "release"
    assert ferry.json()["propertySources"][0]["source"]["orders.label"] == "release"


# === the differences issue 12 names, decided side by side ===


@pytest.fixture(scope="module")
def master_only_pair(tmp_path_factory):
    """A git repository with a `master` branch only; the real server's default label is
    `main`, as in Spring Cloud Config 4."""
    where = tmp_path_factory.mktemp("config-master")
    repo = where / "config-master"
    sample_git_repo(repo, "master")
    yield from serve(where, repo, {
        "spring.profiles.active": "git",
        "spring.cloud.config.server.git.uri": f"file://{repo}",
    })


def test_main_falls_back_to_master_on_both(master_only_pair):
    assert_alike(master_only_pair, ["/orders/dev", "/orders/dev/main", "/main/orders-dev.yml",
                                    "/orders/dev/master", "/orders/dev/nosuch"])
    real, ferry = master_only_pair.both("/orders/dev/main")
    assert real.status_code == ferry.status_code == 200


@pytest.mark.parametrize("profile", ["_local", "dev:eu"])
def test_profiles_spring_boot_refuses_are_refused_by_both(native_pair, git_pair, profile):
    """Spring Boot 3 refuses these profile names ("Profile '_local' must start and end with a
    letter or digit"), so the real server answers 500 (folder) or 404 (git); Ferry answers
    400. Deliberate: both refuse, and 400 says the request is at fault."""
    for pair in (native_pair, git_pair):
        real, ferry = pair.both(f"/orders/{profile}")
        assert real.status_code in (404, 500), real.text
        assert ferry.status_code == 400, ferry.text


@pytest.mark.parametrize("path", ["/orders,application/dev", "/application,orders/dev",
                                  "/orders,application-dev.yml", "/orders,application-dev.properties"])
def test_comma_separated_names_answer_alike(git_pair, path):
    assert_alike(git_pair, [path])


@pytest.mark.parametrize("labels", ["stable,main", "main,stable"])
def test_comma_separated_labels_answer_alike(git_pair, labels):
    """The real server merges the labels (the last one wins) and joins their commit ids in
    `version`."""
    assert_alike(git_pair, [f"/orders/dev/{labels}", f"/{labels}/orders-dev.properties"])


def test_a_comma_label_list_with_an_unknown_label_is_404_on_both(git_pair):
    assert_alike(git_pair, ["/orders/dev/nosuch,main"])
    real, ferry = git_pair.both("/orders/dev/nosuch,main")
    assert real.status_code == ferry.status_code == 404
