"""`example://<name>`: the example models, written on first use into a local cache.

Like a public bucket of sample models (Seldon's samples point at one), except that nothing is
downloaded: the model is trained or written here, once, and reused. The cache is
`$INFERLINE_EXAMPLES_DIR`, else `~/.cache/inferline/examples`.
"""

import os
import shutil
import tempfile
from pathlib import Path
from urllib.parse import urlparse

from inferline.protocol.errors import InvalidModelURI


def examples_dir() -> Path:
    configured = os.environ.get("INFERLINE_EXAMPLES_DIR")
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "inferline" / "examples"


class ExampleStorage:
    def fetch(self, uri: str, base: Path | None) -> Path:
        from inferline.examples import EXAMPLES

        parsed = urlparse(uri)
        name = (parsed.netloc + parsed.path).strip("/")
        if name not in EXAMPLES:
            raise InvalidModelURI(
                f"'{uri}' names no example model; the examples are: {', '.join(sorted(EXAMPLES))}"
            )
        folder = examples_dir() / name
        if not folder.exists():
            # Written aside and moved in whole, so two servers asking at once never see half.
            folder.parent.mkdir(parents=True, exist_ok=True)
            scratch = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=folder.parent))
            try:
                EXAMPLES[name](scratch)
                scratch.rename(folder)
            except OSError:
                if not folder.exists():
                    raise
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
        return folder
