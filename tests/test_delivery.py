"""Model CD: the workflow files (schema, audit, the commands they call) and the staging -> prod flow
for real against lesson 09's authenticated servers."""

from __future__ import annotations

import mlflow
import pytest
import yaml
from mlflow.exceptions import MlflowException

from mlops_lab import access, auth, cli, config, delivery, environments, promotion

ROOT = config.repo_root()
WORKFLOWS = ROOT / ".github" / "workflows"

INSECURE = """\
name: insecure
on: [push, issues]
permissions: write-all
jobs:
  greet:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - run: echo "${{ github.event.issue.title }}"
"""
INVALID = """\
name: invalid
on: push
jobs:
  test:
    steps:
      - run: make test
    timeout: 10
"""


def _load(name: str) -> dict:
    return yaml.safe_load((WORKFLOWS / name).read_text())


# -- the workflow files (unit: the real tools, offline, seconds) ------------------------------------------
@pytest.mark.unit
def test_the_workflows_pass_githubs_schema_and_zizmors_audit():
    results = delivery.check_workflows()
    assert [r.tool for r in results] == ["check-jsonschema", "zizmor"]
    for result in results:
        assert result.ok, f"{result.tool}:\n{result.output}"
    assert "No findings" in results[1].output


@pytest.mark.unit
def test_an_insecure_workflow_is_valid_but_zizmor_rejects_it(tmp_path):
    (tmp_path / "insecure.yml").write_text(INSECURE)
    schema, audit = delivery.check_workflows(tmp_path)
    assert schema.ok, schema.output  # GitHub would run it ...
    assert not audit.ok  # ... and the audit says why it should not
    for finding in ("unpinned-uses", "template-injection", "artipacked"):
        assert finding in audit.output, audit.output


@pytest.mark.unit
def test_an_invalid_workflow_is_rejected_by_the_schema(tmp_path):
    (tmp_path / "invalid.yml").write_text(INVALID)
    schema, _ = delivery.check_workflows(tmp_path)
    assert not schema.ok
    assert "runs-on" in schema.output and "invalid.yml" in schema.output


@pytest.mark.unit
def test_check_workflows_fails_on_an_empty_folder(tmp_path):
    with pytest.raises(delivery.DeliveryError, match="No workflow files"):
        delivery.check_workflows(tmp_path)


@pytest.mark.unit
def test_the_jobs_call_commands_that_exist():
    steps = delivery.workflow_steps()
    assert set(steps.workflow) == {"course.yml", "model-cd.yml"}
    assert delivery.check_commands(steps, ROOT / "Makefile", cli.parser().parse_args) == []
    cd = steps[steps.workflow == "model-cd.yml"].set_index("job")
    assert cd.run.to_dict() == {"unit": "make cd-unit", "staging": "make cd-staging", "promote": "make cd-promote"}
    assert cd.needs.to_dict() == {"unit": "", "staging": "unit", "promote": "staging"}
    assert cd.environment["promote"] == "production"
    course = steps[steps.workflow == "course.yml"].run.tolist()
    assert course == ["bash .ci/run", "make course"]


@pytest.mark.unit
def test_a_missing_make_target_or_cli_command_is_found(tmp_path):
    import pandas as pd

    steps = pd.DataFrame([{"workflow": "w.yml", "job": "a", "needs": "", "environment": "", "run": "make cd-nope"},
                          {"workflow": "w.yml", "job": "b", "needs": "", "environment": "", "run": "mlops-lab cd deploy"},
                          {"workflow": "w.yml", "job": "c", "needs": "", "environment": "",
                           "run": ".venv/bin/mlops-lab cd staging --seed 3"}])
    problems = delivery.check_commands(steps, ROOT / "Makefile", cli.parser().parse_args)
    assert len(problems) == 2
    assert "make target 'cd-nope'" in problems[0] and "not an mlops-lab command" in problems[1]


@pytest.mark.unit
def test_the_workflows_are_locked_down():
    for name in ("course.yml", "model-cd.yml"):
        spec = _load(name)
        assert spec["permissions"] == {}
        for job in spec["jobs"].values():
            assert job["permissions"] == {"contents": "read"}
            checkout = [s for s in job["steps"] if s.get("uses", "").startswith("actions/checkout@")]
            assert checkout and all(s["with"]["persist-credentials"] is False for s in checkout)
    text = (WORKFLOWS / "course.yml").read_text()
    assert "actions/upload-artifact@" in text and "build/*.ipynb" in text


@pytest.mark.unit
def test_the_cd_commands_parse_and_check_workflows_runs(capsys):
    parse = cli.parser().parse_args
    assert parse(["cd", "unit", "--", "-k", "layers"]).pytest_args == ["-k", "layers"]
    assert parse(["cd", "promote", "--no-decide"]).no_decide is True
    assert cli.main(["cd", "check-workflows"]) == 0
    assert "No findings" in capsys.readouterr().out


@pytest.mark.unit
def test_make_targets_are_read_from_the_makefile():
    targets = delivery.make_targets(ROOT / "Makefile")
    assert {"cd-unit", "cd-staging", "cd-promote", "check-workflows", "test", "course"} <= targets
    assert "BIN" not in targets and "PHONY" not in targets


# -- the staging -> prod flow, for real (integration) ---------------------------------------------------------
@pytest.fixture(scope="module")
def landscape(tmp_path_factory):
    """dev, staging and prod, and one delivery through them: the staging job, then the promote job."""
    home = tmp_path_factory.mktemp("delivery")
    with environments.running("all", home=home) as envs:
        staged = delivery.staging(envs)
        promoted = delivery.promote(envs)
        yield {"envs": envs, "staged": staged, "promoted": promoted}


@pytest.mark.integration
def test_a_candidate_goes_through_staging_into_prod(landscape):
    staged, promoted, envs = landscape["staged"], landscape["promoted"], landscape["envs"]
    checks = staged.checks.set_index("check")
    assert list(checks.index) == ["loads_by_alias", "scores_shipped_data", "keeps_data_contract",
                                  "contract_refuses_bad_rows", "gate_verdict"]
    assert staged.passed, staged.checks.to_string()
    assert (staged.dev_version, staged.staging_version) == ("1", "1")
    assert "300 of 300 rows scored" in checks.loc["scores_shipped_data", "detail"]
    assert promoted == {"staging_version": "1", "prod_version": "1", "promoted_by": promotion.DEPLOYER,
                        "decision": "promote", "champion_before": None, "champion": "1"}
    trail = promotion.lineage(delivery.MODEL, envs["prod"]).iloc[0]
    assert (trail.source_env, trail.promoted_by, trail.validation_status) == ("staging", "deploy-bot", "passed")
    assert trail.aliases == "challenger,champion"


@pytest.mark.integration
def test_a_data_scientist_cannot_promote_to_prod_but_the_deployer_bot_can(landscape):
    envs = landscape["envs"]
    prod = envs["prod"]
    scientist = delivery.account(prod, "eve", "data_scientist")
    envs["staging"].create_user("eve", "data_scientist", password=scientist.password)
    with pytest.raises(promotion.PromotionError, match="Refused: "):
        promotion.promote(delivery.MODEL, "1", envs["staging"], prod, deployer=scientist)
    with prod.signed_in(scientist):
        client = mlflow.MlflowClient()
        for attempt in (lambda: client.set_registered_model_alias(delivery.MODEL, "champion", "1"),
                        lambda: client.create_model_version(delivery.MODEL, "runs:/x/model"),
                        lambda: client.get_registered_model(delivery.MODEL)):
            with pytest.raises(MlflowException) as refused:
                attempt()
            assert refused.value.get_http_status_code() == 403
    assert access.request(prod.url, None, "GET", "registered-models/get", name=delivery.MODEL).status_code == 401
    bot = prod.credentials(promotion.DEPLOYER)
    with prod.signed_in(bot):  # the bot may, and did: prod's champion is its copy
        assert mlflow.MlflowClient().get_model_version_by_alias(delivery.MODEL, "champion").tags[
            "lineage.promoted_by"] == promotion.DEPLOYER


@pytest.mark.integration
def test_a_runner_without_the_credentials_file_gets_a_working_bot_account(landscape):
    staging_env = landscape["envs"]["staging"]
    old = staging_env.credentials(promotion.DEPLOYER)
    auth.forget("staging", promotion.DEPLOYER, staging_env.home)  # as on a fresh CI runner
    new = delivery.account(staging_env, promotion.DEPLOYER, "deployer")
    assert new.password != old.password
    assert auth.whoami(staging_env.url, new) == 200 and auth.whoami(staging_env.url, old) == 401
    assert staging_env.credentials(promotion.DEPLOYER) == new
    assert delivery.integration_checks(staging_env)["passed"].all()


@pytest.mark.integration
def test_the_promote_job_refuses_without_a_candidate_in_staging(landscape):
    with pytest.raises(delivery.DeliveryError, match="staging has no fraud-model@challenger: run the staging job"):
        delivery.promote(landscape["envs"], name="fraud-model")
