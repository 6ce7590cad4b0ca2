"""Run every benchmark: ``python -m bench``."""

from bench import rbac

if __name__ == "__main__":
    rbac.main()
