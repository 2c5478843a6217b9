"""The scanning phase on real images built by the real engine: each finding kind, the
blocking policy both ways, and findings on the job and in its logs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .conftest import StackFactory, dockerfile, tar_context

PERF_OK = "echo '{\"perf\": 1}' > /data/perf.json"
PRIVATE_KEY = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\n"
    "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
    "-----END OPENSSH PRIVATE KEY-----\n"
)
GITHUB_TOKEN = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"


def rules(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["rule"]: f for f in job["findings"]}


def test_checks_private_key_in_the_image_is_rejected(make_stack: StackFactory) -> None:
    api = make_stack()
    context = tar_context(
        {
            "Dockerfile": dockerfile(PERF_OK, extra="COPY deploy_key /opt/model/deploy_key\n"),
            "deploy_key": PRIVATE_KEY,
        }
    )

    job = api.run(context)

    assert job["status"] == "failed"
    assert job["error"]["code"] == "scan_rejected"
    assert "image.private_key" in job["error"]["message"]
    key = rules(job)["image.private_key"]
    assert key["severity"] == "high" and key["path"] == "/opt/model/deploy_key"
    assert "BEGIN OPENSSH" not in str(job["findings"])  # the secret itself is never shown


def test_checks_secret_in_env_is_rejected_without_showing_it(make_stack: StackFactory) -> None:
    api = make_stack()

    job = api.run(dockerfile(PERF_OK, extra=f"ENV GITHUB_TOKEN={GITHUB_TOKEN}\n"))

    assert job["error"]["code"] == "scan_rejected"
    secret = rules(job)["image.secret_env"]
    assert secret["severity"] == "critical" and secret["line"] == 2
    # Findings and the error never repeat it (the build log echoes the owner's own
    # Dockerfile, which is theirs to see).
    assert GITHUB_TOKEN not in str(job["findings"]) and GITHUB_TOKEN not in str(job["error"])


def test_checks_setuid_binary_and_root_user_are_warnings_the_job_still_runs(
    make_stack: StackFactory,
) -> None:
    api = make_stack()
    extra = "RUN cp /bin/busybox /bin/escalate && chmod 4755 /bin/escalate\n"

    job = api.run(dockerfile(PERF_OK, extra=extra))

    assert job["status"] == "succeeded", (job["error"], job["findings"])
    found = rules(job)
    assert found["image.setuid"]["path"] == "/bin/escalate"
    assert found["image.setuid"]["severity"] == "medium"
    assert found["image.root_user"]["severity"] == "low"
    # The base image's own files are the operator's choice: only what the job added shows.
    assert [f["path"] for f in job["findings"] if f["rule"] == "image.setuid"] == ["/bin/escalate"]
    logs = api.logs(job["id"])
    assert "medium: image.setuid /bin/escalate" in logs


def test_checks_hadolint_findings_carry_their_dockerfile_lines(make_stack: StackFactory) -> None:
    api = make_stack()
    job = api.run(dockerfile(PERF_OK, extra="RUN echo one\nRUN cd /tmp && echo two\n"))

    assert job["status"] == "succeeded", (job["error"], job["findings"])
    cd = rules(job)["DL3003"]
    assert cd["line"] == 3 and cd["source"] == "hadolint" and cd["severity"] == "low"


def test_checks_policy_both_ways_block_severity_and_accepted_rules(
    make_stack: StackFactory, tmp_path: Path
) -> None:
    """The same image: blocked by default; passes when the operator raises the bar or
    accepts the rule, with the finding kept on the job either way."""
    extra = "RUN cp /bin/busybox /bin/escalate && chmod 4755 /bin/escalate\n"
    submission = dockerfile(PERF_OK, extra=extra)

    raised = ["image.setuid=high"]  # medium by default: raised so that it blocks

    strict = make_stack(home=tmp_path / "strict", finding_severity=raised).run(submission)
    accepted = make_stack(
        home=tmp_path / "accepted", finding_severity=raised, accepted_findings=["image.set*"]
    ).run(submission)
    lenient = make_stack(
        home=tmp_path / "lenient", block_severity="critical", finding_severity=raised
    ).run(submission)

    assert strict["error"]["code"] == "scan_rejected"
    assert "image.setuid" in strict["error"]["message"]
    assert accepted["status"] == "succeeded" and rules(accepted)["image.setuid"]["accepted"]
    assert lenient["status"] == "succeeded"
    assert rules(lenient)["image.setuid"]["severity"] == "high"


def test_checks_every_other_finding_kind_from_one_real_image(
    make_stack: StackFactory,
) -> None:
    """Labels, build args, credential files, setgid, exposed ports and size, each found
    in a real image; none of them blocks at the default policy except the secrets."""
    api = make_stack(max_image_bytes="1k", accepted_findings=["image.secret_*"])
    extra = (
        "LABEL deploy.password=hunter2-but-longer\n"
        "ARG HF_TOKEN=hf_abcdefghijklmnopqrstuvwxyzABCDEF\n"
        "RUN echo building\n"
        "COPY .env /opt/app/.env\n"
        "RUN cp /bin/busybox /bin/groupie && chmod 2755 /bin/groupie\n"
        "EXPOSE 8080\n"
    )
    context = tar_context(
        {"Dockerfile": dockerfile(PERF_OK, extra=extra), ".env": "DB_PASSWORD=x\n"}
    )

    job = api.run(context)

    assert job["status"] == "succeeded", (job["error"], job["findings"])
    found = rules(job)
    assert found["image.secret_label"]["severity"] == "high"
    assert found["image.secret_label"]["accepted"] is True
    assert found["image.secret_build_arg"]["severity"] == "critical"
    assert found["image.credentials_file"]["path"] == "/opt/app/.env"
    assert found["image.setgid"]["path"] == "/bin/groupie"
    assert "8080/tcp" in found["image.exposed_port"]["message"]
    assert found["image.size"]["severity"] == "medium"
    assert "hunter2" not in str(job["findings"]) and "hf_abcdefghij" not in str(job["findings"])
