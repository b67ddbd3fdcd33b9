"""Developer tools of the repository (not part of the filedrop package); run from the repository root."""
