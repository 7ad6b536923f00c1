"""Generation: speech to motion around a reference face, and previews of the result."""
