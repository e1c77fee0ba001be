"""Training over REST: labels from the datastore's image info, progress in ``GET /train/`` and ``/info``,
published weights used by the next inference without a restart."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from server_testlib import nifti_pixels, wait_until


def _run_training(server, client, name: str, params: dict) -> tuple[dict, list[str]]:
    """Start ``name``, poll ``GET /train/`` until it ends; return the final task and every detail line seen."""
    started = client.train_start(name, params)
    assert started["status"] in ("SUBMITTED", "RUNNING"), started
    seen: list[str] = []

    def finished():
        task = server.get("/train/").json()
        seen.extend(line for line in task.get("details", []) if line not in seen)
        return task if task["status"] in ("DONE", "ERROR", "STOPPED") else None

    task = wait_until(finished, 900, interval=2.0, what=f"{name} training")
    assert task["status"] == "DONE", "\n".join(seen[-20:])
    return task, seen


def _counterfactual(server, image: str) -> tuple[dict, np.ndarray]:
    """A counterfactual (it needs no synthetic identity: a few training steps on 5 patients make a
    usable disentangler, not necessarily an identity generator whose samples pass the novelty check)."""
    params = {"params": json.dumps({"target": "effusion", "mode": "full"})}
    reply = server.post(f"/infer/counterfactual?image={image}&output=json", data=params)
    assert reply.status_code == 200, reply.text
    info = reply.json()
    r = server.post(f"/infer/counterfactual?image={image}&output=image", data=params)
    out = server.workdir / f"train-check-{info['model_checksum'][:8]}.nii"
    out.write_bytes(r.content)
    return info, nifti_pixels(out)[0][:, :, 0].T


def _source(server, image: str):
    from monai_anon_app.dicom.pixels import read_dicom_image

    return read_dicom_image(next(Path(server.studies, "images").glob(f"{image}.dcm"))).pixels


def test_labels_come_from_labels_csv_into_image_info(server, image_ids):
    labelled = [i for i in image_ids if i.startswith("PH")]
    assert len(labelled) == 12
    for image in labelled:
        info = server.get(f"/datastore/image/info?image={image}").json()
        assert info["patient_id"] == image.split("_")[0] and info["finding"]
    assert "patient_id" not in server.get("/datastore/image/info?image=radiograph16").json()


def test_disentangler_training_publishes_weights_the_next_inference_uses(server, client, image_ids, reference):
    image = next(i for i in image_ids if i.startswith("PH"))
    before, _ = _counterfactual(server, image)
    # a label set over REST is read by the training: the unlabelled NIfTI joins as a fifth patient
    r = server.request("PUT", "/datastore/image/info?image=oblique",
                       data={"info": json.dumps({"patient_id": "PX-REST", "finding": "normal"})})
    assert r.status_code == 200, r.text

    _, lines = _run_training(server, client, "disentangler", {"steps": 3, "vae_steps": 10, "seed": 5})
    assert any("disentangler: step 3/3" in line for line in lines), lines[-10:]
    assert any("13 labelled images of 5 patients" in line for line in lines), lines[-10:]
    stats = server.get("/info/").json()["train_stats"]["disentangler"]
    assert stats["status"] == "DONE" and stats["images"] == 13 and stats["step"] == stats["total_steps"] == 3
    assert stats["published"] in server.get("/info/").json()["model"]["name"]

    after, pixels = _counterfactual(server, image)
    assert after["model_checksum"] == stats["checksum"] != before["model_checksum"]
    expected = reference().counterfactual(_source(server, image), target="effusion", mode="full").image
    assert reference().checksum == stats["checksum"]
    np.testing.assert_allclose(pixels, expected, atol=1e-5 * float(np.ptp(expected)))


def test_identity_generator_training_keeps_the_disentangler(server, client, image_ids, reference, tiny_model):
    image = next(i for i in image_ids if i.startswith("PH"))
    root = server.workdir / "app" / "model" / tiny_model.name
    folder_before = root / (root / "current").read_text().strip() if (root / "current").exists() else tiny_model
    before, _ = _counterfactual(server, image)
    model_before = reference()

    _, lines = _run_training(server, client, "identity_vae", {"vae_steps": 12})
    assert any("identity_vae: step 12/12" in line for line in lines), lines[-10:]
    stats = server.get("/info/").json()["train_stats"]["identity_vae"]
    folder_after = root / stats["published"]
    after, pixels = _counterfactual(server, image)
    assert after["model_checksum"] == stats["checksum"] != before["model_checksum"]
    model_after = reference()
    assert model_after.checksum == stats["checksum"]
    # same encoder/generator weights; a new identity generator whose keep-away bank adds the datastore's patients
    assert (folder_after / "model.pt").read_bytes() == (folder_before / "model.pt").read_bytes()
    assert (folder_after / "identity_vae.pt").read_bytes() != (folder_before / "identity_vae.pt").read_bytes()
    assert len(model_after.bank.identities) > len(model_before.bank.identities)
    expected = model_after.counterfactual(_source(server, image), target="effusion", mode="full").image
    np.testing.assert_allclose(pixels, expected, atol=1e-5 * float(np.ptp(pixels)))
