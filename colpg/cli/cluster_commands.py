"""``colpg db cluster ...``: a local Citus cluster (coordinator + workers) for development and tests."""

from __future__ import annotations

from pathlib import Path

import typer

from colpg.cli.apps import db_app, reported_errors

cluster_app = typer.Typer(
    help="A local Citus cluster built from source and run from the embedded server's binaries."
    " Its nodes listen on unix sockets in the cluster folder only: nothing is open on TCP.",
    no_args_is_help=True,
)
db_app.add_typer(cluster_app, name="cluster")

DATA_DIR_HELP = "Cluster folder (default: $COLPG_CITUS_DIR, else the user data dir's colpg/citus, beside colpg's pgdata)."


@cluster_app.command("up")
def cluster_up(
    workers: int | None = typer.Option(None, "--workers", help="Worker nodes of a new cluster (default 2)."),
    data_dir: Path | None = typer.Option(None, "--data-dir", help=DATA_DIR_HELP),
    source: Path | None = typer.Option(
        None, "--source", help="Citus source tarball (default: $COLPG_CITUS_SOURCE); needed to build Citus the first time."
    ),
    port: int | None = typer.Option(
        None, "--port", help="Coordinator's port of a new cluster (default 5600); worker i gets port+i. Unix sockets only, no TCP."
    ),
) -> None:
    """Build Citus (once, cached), then create or start the cluster and print the coordinator's URL.

    Use it as COLPG_DATABASE_URL=$(colpg db cluster up). A running cluster is left as it is.
    """
    from colpg import cluster

    with reported_errors():
        typer.echo(cluster.cluster_up(data_dir, workers=workers, port=port, source=source))


@cluster_app.command("url")
def cluster_url(data_dir: Path | None = typer.Option(None, "--data-dir", help=DATA_DIR_HELP)) -> None:
    """Print the coordinator's URL: COLPG_DATABASE_URL=$(colpg db cluster url)."""
    from colpg import cluster

    with reported_errors():
        typer.echo(cluster.cluster_layout(data_dir).url())


@cluster_app.command("status")
def cluster_status(data_dir: Path | None = typer.Option(None, "--data-dir", help=DATA_DIR_HELP)) -> None:
    """Show each node: its port, running or not, its Citus and pgvector versions, the coordinator's active workers."""
    from colpg import cluster

    with reported_errors():
        layout = cluster.cluster_layout(data_dir)
        nodes = cluster.cluster_status(layout.folder)
        typer.echo(f"cluster in {layout.folder}")
        for node in nodes:
            line = f"{node.name:<12}port {node.port}  "
            if not node.running:
                typer.echo(line + "stopped")
                continue
            line += f"running  citus {node.citus or 'not installed'}  vector {node.vector or 'not installed'}"
            if node.name == "coordinator":
                workers = [str(port) if host == str(layout.socket_dir) else f"{host}:{port}" for host, port in node.active_workers]
                line += f"  active workers: {', '.join(workers) or 'none'}"
            typer.echo(line)


@cluster_app.command("down")
def cluster_down(
    data_dir: Path | None = typer.Option(None, "--data-dir", help=DATA_DIR_HELP),
    remove: bool = typer.Option(False, "--remove", help="Delete the cluster folder and all its databases too."),
    yes: bool = typer.Option(False, "--yes", help="With --remove: do not ask."),
) -> None:
    """Stop every node (the data stays for the next `up`, unless --remove)."""
    from colpg import cluster

    with reported_errors():
        folder = cluster.cluster_layout(data_dir).folder
        if remove and not yes:
            typer.confirm(f"delete the Citus cluster in {folder} and every database in it?", abort=True)
        stopped = cluster.cluster_down(folder, remove=remove)
        typer.echo(f"stopped {', '.join(stopped) or 'nothing (no node was running)'}" + (f"; removed {folder}" if remove else ""))
