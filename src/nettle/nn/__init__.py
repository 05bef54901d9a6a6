"""Pure `nn.Module` building blocks (no training logic): substitutes, logic units, Bayesian."""
