"""Image automation: Flux's image-policy markers, applied to the bytes they mark."""
