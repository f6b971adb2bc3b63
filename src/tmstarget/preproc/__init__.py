"""The built-in preprocessing: anatomy, BOLD realignment, confounds, registration and its checks."""
