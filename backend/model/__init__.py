"""The conditional motion diffusion transformer (cMDT) and the motion space it works in."""
