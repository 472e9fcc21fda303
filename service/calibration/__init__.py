"""Operator-uploaded calibration sets: the upload contract that the gateway enforces and that
training reads back.

``intake.check_upload`` parses and validates an upload, refusing a bad one with one
InvalidCalibrationSet (422) that names the problem, before anything is stored or the black box
is queried; ``store.CalibrationStore`` keeps the accepted bytes under their sha256 so each patch
version names the exact data it came from.

The readers need pyarrow and Pillow, and parsing a large upload is CPU work, so the serving
process never imports them: it validates through ``checker.UploadChecker`` (a separate
process). Import the modules you need; this package imports nothing on its own.
"""
