"""The network and the group it is equivariant to: ViT backbone, D4 × scale actions."""
