"""CausalDreamer: identity-preserving temporal image generation through causal intervention attention."""
