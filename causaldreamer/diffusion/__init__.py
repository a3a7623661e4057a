"""Diffusion side of CausalDreamer: intervention attention processors, the sequence generator, the
Stable Diffusion loaders (real and tiny). Submodules are imported where needed: diffusers is slow to import."""
