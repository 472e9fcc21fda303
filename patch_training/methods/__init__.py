"""One module per patch-training method (DESIGN.md "Patch kinds"); ``eraser`` for now."""
