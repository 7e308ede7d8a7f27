"""Run inside the main test host by test_multihost: the main notebook's Start flow, driven
through the same WorkerForm and button a person uses. Prints one JSON line with what happened."""

import json
import sys
from pathlib import Path

from imgdist.cluster import Cluster
from imgdist.distribution import distribute
from imgdist.portrait import make_copies, sample_portrait
from imgdist.widgets import WorkerForm


def main() -> None:
    controller_ip, target, ssh_args, out = sys.argv[1], sys.argv[2], sys.argv[3], Path(sys.argv[4])
    with Cluster.start_local(
        0, controller_ip=controller_ip, profile_dir=out / "profile"
    ) as cluster:
        form = WorkerForm(cluster, [], ssh_args=ssh_args)
        form.boxes[0].value = target
        form.start_button.click()
        name = form.boxes[0].value
        connected = form.connect(1)
        copies = make_copies(sample_portrait(), 8, out / "images")
        result = distribute(
            form.workers(1), copies, out_dir=out / "images", manifest=out / "manifest.json"
        )
        print(
            json.dumps(
                {
                    "box": name,
                    "connected": connected,
                    "message": form.message.value,
                    "processed": len(result.processed),
                    "workers": sorted(result.per_worker()),
                }
            )
        )


if __name__ == "__main__":
    main()
