"""The library's management routes under hypothesis: any JSON body to /api/show, /api/copy,
/api/delete, /models/load and /models/unload is answered with a 2xx or a 4xx naming what is wrong,
never a 5xx, and nothing outside the library's folder is touched.

The app serves a folder of its own holding a link to the tiny Llama, so a body that happens to
name it changes nothing the rest of the suite uses.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.http.app import create_app
from server.settings import Settings
from tests.server.conftest import TEST_SETTINGS

ROUTES = [
    ("post", "/api/show"),
    ("post", "/api/copy"),
    ("delete", "/api/delete"),
    ("post", "/models/load"),
    ("post", "/models/unload"),
]
NAMES = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        ["../tiny", "/etc/passwd", "tiny\x00", "hf.co/a/b:Q4", "a/b/c.gguf", "..", "tiny:latest", "ｔｉｎｙ"]
    ),
)
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | NAMES,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
BODIES = st.one_of(
    st.fixed_dictionaries(
        {}, optional={"model": VALUES, "name": VALUES, "source": VALUES, "destination": VALUES, "keep_alive": VALUES}
    ),
    VALUES,
)


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_llama_gguf):
    folder = tmp_path_factory.mktemp("bodies-library")
    (folder / "tiny.gguf").symlink_to(tiny_llama_gguf)
    app = create_app(Settings(**{**TEST_SETTINGS, "models_dir": str(folder), "default_model": "tiny"}))
    library = app.extensions["laptop_llama"].library
    assert library.wait_loaded("tiny", 120)
    yield app.test_client(), folder
    library.close()


@pytest.mark.parametrize("method, route", ROUTES)
def test_no_management_body_gets_a_5xx(served, method, route):
    client, folder = served
    outside = sorted(p.name for p in folder.parent.iterdir())

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(BODIES)
    def run(body) -> None:
        response = getattr(client, method)(route, data=json.dumps(body), content_type="application/json")
        assert response.status_code < 500, (body, response.get_data()[:300])
        if response.status_code >= 400:
            assert response.get_json()["error"], body

    run()
    assert sorted(p.name for p in folder.parent.iterdir()) == outside  # nothing written beside the folder
