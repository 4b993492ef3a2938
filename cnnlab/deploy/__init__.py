"""A trained model outside cnnlab: export, and running exported files."""
