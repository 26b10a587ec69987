"""`satchel storage doctor|policy`."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from satchel.cli.output import console, print_json
from satchel.errors import InvalidInput

app = typer.Typer(help="Validate buckets and print the policies they need.",
                  no_args_is_help=True)


@app.command("doctor")
def doctor(
    address: Annotated[str, typer.Argument(help="Storage address, e.g. s3://KEY:SECRET@host/"
                                           "bucket?region=r (quote it in the shell)")],
    path: Annotated[str | None, typer.Option(help="Sub-path inside the bucket")] = None,
    origin: Annotated[str | None, typer.Option(help="Browser origin that must pass CORS "
                                               "(your Satchel URL)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable report")] = False,
    server: Annotated[bool, typer.Option("--server", help="Run on the Satchel server (admin) "
                                         "instead of from this machine")] = False,
) -> None:
    """Check a bucket: syntax, name rules, reachability, credentials, a real round trip under
    the sub-path, CORS, KMS, versioning/lifecycle and clock skew. Exit code 1 on errors."""
    if server:
        from satchel.sdk.client import Client

        with Client() as client:
            report = client.storage_doctor(address, path=path, origin=origin)
    else:
        from satchel.storage.doctor import DoctorOptions, run_doctor
        from satchel.storage.registry import StoreContext

        context = StoreContext(public_url=origin or "http://127.0.0.1", instance_secret=b"cli")
        report = run_doctor(address, context, DoctorOptions(path=path, origin=origin)).to_dict()
    if as_json:
        print_json(report)
    else:
        _print_report(report)
    if not report["ok"]:
        raise typer.Exit(1)


def _print_report(report: dict[str, object]) -> None:
    console.print(f"Bucket doctor for {report['address']}"
                  + (f" (path {report['path']})" if report["path"] else ""), markup=False)
    findings = report["findings"]
    assert isinstance(findings, list)
    for f in findings:
        colour = "red" if f["severity"] == "error" else "yellow"
        console.print(f"[{colour}]{f['severity'].upper():7}[/{colour}] {f['check']}: ",
                      end="")
        console.print(f"{f['message']}", markup=False)
        console.print(f"         fix: {f['fix']}", markup=False)
    passed = report["passed"]
    assert isinstance(passed, list)
    if passed:
        console.print(f"[green]passed[/green]  {', '.join(passed)}")
    console.print("OK" if report["ok"] else "FAILED: errors above block using this bucket")


@app.command("policy")
def policy(
    provider: Annotated[str, typer.Option(help="s3, cw, gcs or azure")],
    bucket: Annotated[str, typer.Option(help="Bucket (Azure: container) name")],
    kms_key: Annotated[str | None, typer.Option(help="AWS KMS key ARN for SSE-KMS")] = None,
    path: Annotated[str, typer.Option(help="Sub-path Satchel uses inside the bucket")] = "",
    identity: Annotated[str | None, typer.Option(help="Principal to grant (default: the "
                                                 "server's SATCHEL_BUCKET_ACCESS_IDENTITY)")]
    = None,
    org_id: Annotated[str | None, typer.Option(help="Organization ID (default: the "
                                               "server's)")] = None,
    origin: Annotated[str | None, typer.Option(help="Satchel URL browsers use (default: the "
                                               "server's)")] = None,
    azure_account: Annotated[str | None, typer.Option(help="Azure storage account")] = None,
) -> None:
    """Print the CORS document and least-privilege bucket/IAM policy for a provider."""
    from satchel.storage.policy import PROVIDERS, PolicyRequest, generate_policy

    if provider not in PROVIDERS:
        raise InvalidInput(f"unknown provider {provider!r}; expected one of {', '.join(PROVIDERS)}")
    if identity is None or org_id is None or origin is None:
        from satchel.sdk.client import Client

        with Client() as client:
            info = client.instance()
        identity = identity or info.get("bucket_access_identity") or ""
        org_id = org_id or info["organization_id"]
        origin = origin or info["origin"]
    bundle = generate_policy(PolicyRequest(
        provider=provider,
        bucket=bucket, identity=identity or "", organization_id=org_id or "",
        origin=origin or "", path=path, kms_key=kms_key, azure_account=azure_account,
    ))
    sys.stdout.write(bundle.render() + "\n")
