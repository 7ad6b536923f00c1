"""The diffusion process, apart from the network: noise schedule and the DDIM sampler."""
