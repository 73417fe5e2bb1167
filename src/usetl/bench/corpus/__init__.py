"""A corpus of serverless functions in the style of the public suites (SeBS, FunctionBench,
ServerlessBench, FaaSdom) and of the patterns real handlers use, each a directory under
`functions/` with its handler in fn.py, deployed unmodified with its requirements
(`python -m usetl.bench.corpus`, `make corpus`; see run.py).

An event's strings may name the services the runner starts on 127.0.0.1: "{http}" (the
download server's base URL, bench.httpserver) and "{s3}" (moto's server).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

FUNCTIONS_DIR = Path(__file__).parent / "functions"
SERVICES = ("http", "s3")


@dataclass(frozen=True)
class Function:
    name: str
    event: dict
    requirements: tuple[str, ...] = ()
    mem_mib: int = 256
    quick: bool = False  # in the test suite's fast subset
    suite: str = "pattern"  # the public suite it is modelled on, or a pattern of handlers
    timeout: float = 120.0

    @property
    def code_dir(self) -> Path:
        return FUNCTIONS_DIR / self.name

    def needs(self) -> set[str]:
        """The services its event names."""
        return {s for s in SERVICES if "{" + s + "}" in repr(self.event)}


def _fill(value, services: dict[str, str]):
    if isinstance(value, str):
        return re.sub(r"\{(http|s3)\}", lambda m: services[m.group(1)], value)
    if isinstance(value, dict):
        return {k: _fill(v, services) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, services) for v in value]
    return value


def event_for(fn: Function, services: dict[str, str]) -> dict:
    """The function's event with the services' URLs in it."""
    return _fill(fn.event, services)


def _f(name, suite, event, *requirements, mem_mib=256, quick=False):
    return Function(name, event, tuple(requirements), mem_mib, quick, suite)


ORDER = {"items": [{"sku": "ABC-1", "quantity": 2, "price": 9.5},
                   {"sku": "XYZ-22", "quantity": 1, "price": 100.25}],
         "id": 7, "kind": "created", "at": "2024-06-01T10:00:00Z", "tags": ["a", "b"]}

CORPUS: list[Function] = [
    _f("dynamic_html", "SeBS", {"username": "<admin>", "random_len": 1000, "seed": 1},
       "jinja2", quick=True),
    _f("uploader", "SeBS", {"object": {"url": "{http}/bytes/1500000", "key": "blob.bin"},
                            "bucket": {"url": "{http}/store"}}, quick=True),
    _f("thumbnailer", "SeBS", {"width": 640, "height": 480, "max_width": 200,
                               "max_height": 200}, "pillow", quick=True),
    _f("compression", "SeBS", {"seed": 2, "dirs": 3, "files": 4}),
    _f("graph_pagerank", "SeBS", {"size": 5000, "seed": 3}, "igraph"),
    _f("graph_bfs", "SeBS", {"size": 5000, "seed": 4}, "igraph"),
    _f("graph_mst", "SeBS", {"nodes": 2000, "edges": 8000, "seed": 5}, "networkx"),
    _f("dna_visualisation", "SeBS", {"length": 200000, "seed": 6}, "numpy"),
    _f("chameleon", "FunctionBench", {"num_of_rows": 200, "num_of_cols": 20}, "chameleon"),
    _f("float_operation", "FunctionBench", {"n": 300000}),
    _f("linpack", "FunctionBench", {"n": 300, "seed": 7}, "numpy", quick=True),
    _f("matmul", "FunctionBench", {"n": 300, "seed": 8}, "numpy"),
    _f("pyaes", "FunctionBench", {"length_of_message": 2000, "num_of_iterations": 2,
                                  "seed": 9}, "pyaes"),
    _f("json_dumps_loads", "FunctionBench", {"seed": 10, "depth": 6, "rounds": 5}),
    _f("gzip_compression", "FunctionBench", {"file_size": 2, "seed": 11}),
    _f("model_training", "FunctionBench", {"rows": 600, "seed": 12}, "scikit-learn", "pandas",
       mem_mib=512),
    _f("feature_extraction", "FunctionBench", {"rows": 3000, "seed": 13}, "pandas",
       mem_mib=512),
    _f("image_processing", "FunctionBench", {"size": 256}, "pillow"),
    _f("video_processing", "FunctionBench", {"frames": 20}, "opencv-python-headless",
       mem_mib=512),
    _f("factorial", "ServerlessBench", {"n": 1000}, quick=True),
    _f("matrix", "FaaSdom", {"n": 60, "seed": 14}),
    _f("disk_io", "FaaSdom", {"block_kib": 64, "blocks": 64}),
    _f("network_latency", "FaaSdom", {"url": "{http}", "requests": 50, "connects": 10}),
    _f("logging_handlers", "pattern", {"lines": 200}),
    _f("threadpool_timeout", "pattern", {"workers": 8, "tasks": 40}, quick=True),
    _f("queue_timeout", "pattern", {"maxsize": 5, "items": 200, "idle_timeout": 0.3},
       quick=True),
    _f("asyncio_timeouts", "pattern", {"n": 20}, quick=True),
    _f("signal_alarm", "pattern", {}, quick=True),
    _f("subprocess_pipes", "pattern", {"lines": 500}, quick=True),
    _f("tempfile_sqlite", "pattern", {"rows": 2000, "seed": 15}),
    _f("archives", "pattern", {"files": 4}, quick=True),
    _f("zoneinfo_datetime", "pattern", {"zones": ["America/New_York", "Europe/Berlin",
                                                  "Asia/Kolkata", "Australia/Lord_Howe"]},
       "tzdata", quick=True),
    _f("ids_secrets", "pattern", {"iterations": 20000}, quick=True),
    _f("ssl_handshake", "pattern", {}, "cryptography"),
    _f("http_clients", "pattern", {"base": "{http}"}, quick=True),
    _f("psutil_stats", "pattern", {}, "psutil"),
    _f("network_interfaces", "pattern", {}, "psutil"),
    _f("pydantic_models", "pattern", {"order": ORDER, "bad": [
        {**ORDER, "items": []}, {**ORDER, "kind": "moved", "items": [
            {"sku": "bad", "quantity": 0, "price": 1}]}]}, "pydantic"),
    _f("orjson_yaml", "pattern", {"records": 500}, "orjson", "pyyaml"),
    _f("requests_httpx", "pattern", {"base": "{http}"}, "requests", "httpx", quick=True),
    _f("boto3_moto", "pattern", {"endpoint": "{s3}", "bucket": "corpus", "objects": 5},
       "boto3"),
    _f("subprocess_python", "pattern", {"stage": "prod"}, quick=True),
    _f("asyncio_subprocess", "pattern", {"lines": 1000}, quick=True),
    _f("asyncio_streams", "pattern", {"clients": 8, "url": "{http}/bytes/50000"}),
    _f("http_server_thread", "pattern", {"requests": 10}),
    _f("selectors_pipes", "pattern", {"messages": 300}, quick=True),
    _f("thread_sync", "pattern", {"depth": 20000}),
    _f("environment_identity", "pattern", {}),
    _f("package_metadata", "pattern", {}, "requests"),
    _f("profiling", "pattern", {"n": 20000}),
    _f("uvloop_server", "pattern", {"clients": 10}, "uvloop"),
    _f("aiohttp_client", "pattern", {"base": "{http}", "requests": 8}, "aiohttp"),
    _f("gevent_monkey", "pattern", {"base": "{http}", "requests": 6}, "gevent"),
    _f("zmq_pipeline", "pattern", {"messages": 100}, "pyzmq"),
    _f("grpc_echo", "pattern", {"stream": 20}, "grpcio"),
    _f("duckdb_sql", "pattern", {"rows": 100000}, "duckdb", mem_mib=512),
    _f("polars_frame", "pattern", {"rows": 50000}, "polars", mem_mib=512),
    _f("sqlalchemy_orm", "pattern", {"customers": 50}, "sqlalchemy"),
    _f("html_parsing", "pattern", {"rows": 300}, "beautifulsoup4", "lxml"),
    _f("cli_progress", "pattern", {"steps": 1000}, "tqdm", "rich", "click"),
    _f("onnx_inference", "FunctionBench", {"seed": 16, "threads": 2, "batch": 64}, "onnx",
       "onnxruntime", mem_mib=512),
    _f("numba_jit", "pattern", {"points": 200, "seed": 17}, "numba", mem_mib=512),
    _f("sklearn_parallel", "pattern", {"samples": 400}, "scikit-learn", mem_mib=1024),
    _f("multiprocessing_pool", "pattern", {"n": 100}),
    _f("matplotlib_chart", "pattern", {"points": 500}, "matplotlib", mem_mib=512),
    _f("fastapi_app", "pattern", {"items": 5}, "fastapi", "httpx"),
    _f("flask_app", "pattern", {"n": 100}, "flask"),
    _f("websockets_echo", "pattern", {"messages": 20}, "websockets"),
    _f("filelock_threads", "pattern", {"rounds": 20}, "filelock"),
    _f("dd_disk", "ServerlessBench", {"count": 16}),
    _f("asyncio_signals", "pattern", {}),
    _f("hostname_resolution", "pattern", {}),
    _f("tz_environment", "pattern", {"zones": ["America/New_York", "Asia/Tokyo", "UTC"]}),
    _f("numpy_memmap", "pattern", {"n": 100000}, "numpy"),
    _f("dask_threads", "pattern", {"n": 800000}, "dask", "numpy", mem_mib=512),
    _f("shared_memory", "pattern", {"size": 100000}),
    _f("sendfile_server", "pattern", {"kib": 512}),
    _f("jsonschema_validate", "pattern", {"good": {"id": 3, "items": [{"sku": "AB-1"}]},
                                          "bad": {"id": 0, "items": [{"sku": "x"}, {}]}},
       "jsonschema"),
    _f("openmp_boosting", "pattern", {"samples": 500}, "scikit-learn", mem_mib=512),
    _f("retry_scheduler", "pattern", {"runs": 3}, "tenacity", "apscheduler"),
    # The third wave: AWS Lambda and Azure Functions handlers, ETL, documents, auth,
    # codecs, scientific code, text, dates, servers in the handler, and the system's view.
    _f("s3_event_etl", "AWS Lambda", {"endpoint": "{s3}", "bucket": "uploads", "files": 3,
                                      "rows": 300}, "boto3"),
    _f("sqs_batch", "AWS Lambda", {"endpoint": "{s3}", "queue": "orders", "messages": 35},
       "boto3"),
    _f("sns_fanout", "AWS Lambda", {"endpoint": "{s3}", "topic": "events", "messages": 9},
       "boto3"),
    _f("dynamodb_stream", "AWS Lambda", {"endpoint": "{s3}", "table": "totals",
                                         "records": 24}, "boto3"),
    _f("apigw_proxy", "AWS Lambda", {"items": 6}, quick=True),
    _f("eventbridge_schedule", "AWS Lambda", {"endpoint": "{s3}", "time": "2024-03-31T01:30:00Z",
                                              "zone": "Europe/Berlin", "hours": [0, 2, 3, 6]},
       "boto3", "python-dateutil"),
    _f("azure_http", "Azure Functions", {"orders": [
        {"id": 1, "items": [{"qty": 2, "price": 3.5}]},
        {"id": 2, "items": [{"qty": 1, "price": 10}, {"qty": 4, "price": 0.25}]}]},
       "azure-functions"),
    _f("parquet_etl", "ETL", {"rows": 4000}, "pyarrow", mem_mib=512),
    _f("excel_report", "ETL", {"rows": 200}, "openpyxl"),
    _f("xml_transform", "ETL", {"orders": 12}, "lxml", "xmltodict"),
    _f("markdown_docs", "ETL", {"rows": 40, "version": "2.1"}, "markdown", "beautifulsoup4"),
    _f("email_parsing", "ETL", {"attachments": 3}, quick=True),
    _f("pdf_invoice", "documents", {"rows": 80}, "reportlab", "fpdf2"),
    _f("qr_barcode", "documents", {"text": "https://example.org/ticket/20240601-0042",
                                   "ean": "590123412345"}, "qrcode", "pillow",
       "python-barcode"),
    _f("jwt_auth", "auth", {"methodArn": "arn:aws:execute-api:us-east-1:1:api/prod/GET/items"},
       "pyjwt", "cryptography"),
    _f("password_hashing", "auth", {"password": "correct horse battery staple", "rounds": 6},
       "bcrypt", "passlib"),
    _f("crypto_envelope", "auth", {"message": "secret payload ", "repeat": 100},
       "cryptography"),
    _f("compression_codecs", "pattern", {"seed": 18, "lines": 20000}, "zstandard", "brotli",
       "lz4"),
    _f("scipy_optimize", "scientific", {"seed": 19, "points": 200}, "scipy", mem_mib=512),
    _f("signal_fft", "scientific", {"seed": 20, "rate": 1000, "seconds": 4}, "scipy",
       mem_mib=512),
    _f("sparse_graph", "scientific", {"seed": 21, "n": 2000, "edges": 6000}, "scipy",
       mem_mib=512),
    _f("statsmodels_regression", "scientific", {"seed": 22, "rows": 500}, "statsmodels",
       mem_mib=512),
    _f("sympy_algebra", "scientific", {"sum": 10, "power": 6, "nth": 500}, "sympy"),
    _f("regex_text", "text", {"text": "Serverless in Zürich, servrless in Αθήνα, "
                                      "serverles in Москва and 北京; sErverless again."},
       "regex"),
    _f("fuzzy_dedupe", "text", {"records": 60}, "rapidfuzz", "unidecode", "numpy"),
    _f("tokenizers_bpe", "text", {"lines": 3000, "vocab": 300}, "tokenizers"),
    _f("pendulum_arrow", "dates", {"months": 5}, "pendulum", "arrow"),
    _f("dateutil_rules", "dates", {"count": 8}, "python-dateutil"),
    _f("aiohttp_server", "pattern", {"requests": 12}, "aiohttp"),
    _f("urllib3_pool", "pattern", {"base": "{http}", "requests": 24, "threads": 6,
                                   "maxsize": 3}, "urllib3"),
    _f("asyncio_tcp_server", "pattern", {"clients": 12, "frames": 8}, quick=True),
    _f("sqlalchemy_pool", "pattern", {"pool": 3, "threads": 6, "rows": 20}, "sqlalchemy"),
    _f("structlog_context", "pattern", {"request_id": "req-7", "tasks": 4}, "structlog"),
    _f("otel_tracing", "pattern", {"items": 6}, "opentelemetry-sdk"),
    _f("shell_pipeline", "pattern", {"files": 3, "lines": 400}),
    _f("locale_encodings", "pattern", {}),
    _f("signal_handling", "pattern", {"ticks": 3}),
    _f("resource_limits", "pattern", {"nofile": 40, "fsize": 100000}),
    _f("file_trees", "pattern", {"depth": 3, "width": 3}),
    _f("user_lookups", "pattern", {"missing_user": "no-such-user-x", "missing_gid": 54321}),
    _f("platform_sysconfig", "pattern", {}),
    # The fourth wave: asyncio and structured concurrency, executors at their edges, child
    # processes and terminals, signals around blocking calls, files and their metadata,
    # IPC between processes, local servers for mail, XML-RPC and TLS, C from Python.
    _f("asyncio_taskgroup", "async", {"threads": 4}, quick=True),
    _f("asyncio_process_pool", "async", {"n": 6}),
    _f("asyncio_subprocess_pipeline", "async", {"kib": 256, "children": 6}),
    _f("asyncio_unix_pipes", "async", {"lines": 5}),
    _f("httpx_async_stream", "async", {"base": "{http}", "requests": 6}, "httpx"),
    _f("aiofiles_io", "async", {"files": 4, "lines": 200}, "aiofiles"),
    _f("uvicorn_starlette", "async", {"items": 4}, "uvicorn", "starlette", "httpx"),
    _f("trio_nursery", "async", {"items": 20}, "trio"),
    _f("tornado_server", "async", {"requests": 4}, "tornado"),
    _f("process_pool_cancel", "executors", {"n": 8}),
    _f("thread_pool_cancel", "executors", {"tasks": 20}),
    _f("cloudpickle_pool", "executors", {"offset": 5, "n": 8}, "cloudpickle"),
    _f("multiprocessing_sync", "processes", {"workers": 3, "items": 20}),
    _f("multiprocessing_spawn", "processes", {"scale": 3, "n": 6}),
    _f("subprocess_timeout", "processes", {"rows": 300}),
    _f("posix_spawn", "processes", {"stage": "prod"}),
    _f("select_children", "processes", {"jobs": [5, 9, 13, 20]}),
    _f("prefork_server", "processes", {"workers": 3, "requests": 12}),
    _f("pty_terminal", "processes", {"name": "ada"}),
    _f("pexpect_prompt", "processes", {"user": "ada", "commands": ["load", "run job"]},
       "pexpect"),
    _f("alarm_blocking_calls", "signals", {}, quick=True),
    _f("itimer_profiler", "signals", {"seconds": 0.3}),
    _f("cpu_accounting", "system", {"seconds": 0.2}),
    _f("os_stat_details", "files", {}),
    _f("atomic_writes", "files", {"versions": 5}),
    _f("mmap_files", "files", {"rows": 2000}),
    _f("fcntl_locks", "files", {}),
    _f("watchdog_events", "files", {}, "watchdog"),
    _f("tar_streams", "files", {"files": 3}),
    _f("hashlib_files", "files", {"files": 3, "kib": 256}),
    _f("pickle_shelve", "files", {"rows": 2000, "batches": 20}),
    _f("sqlite_wal_threads", "files", {"rows": 3000}),
    _f("diskcache_memo", "files", {"calls": 20, "per_thread": 50}, "diskcache"),
    _f("h5py_datasets", "files", {"seed": 3, "rows": 4000}, "h5py", "numpy"),
    _f("csv_json_stream", "ETL", {"base": "{http}", "rows": 500}),
    _f("logging_config", "pattern", {"lines": 50}),
    _f("loguru_enqueue", "pattern", {"job": "nightly", "lines": 400}, "loguru"),
    _f("weakref_gc", "pattern", {"resources": 4}),
    _f("unix_sockets_fds", "sockets", {"secret": "s3cr3t"}, quick=True),
    _f("socket_options", "sockets", {"kib": 256}),
    _f("urllib_features", "sockets", {}),
    _f("smtp_local", "sockets", {"day": "2024-06-01", "rows": 1234,
                                 "to": ["a@example.org", "Bob <b@example.org>"]}),
    _f("xmlrpc_service", "sockets", {"stock": [["a", 1], ["b", 2], ["a", 5]]}),
    _f("tls_mutual", "sockets", {}, "cryptography"),
    _f("ctypes_libc", "native", {"values": [5, 3, 9, 1, 7]}),
    _f("cffi_abi", "native", {"values": [5, 3, 9, 1, 7]}, "cffi"),
    # The fifth wave: packages that are not trivial to load (document, media, geo and
    # columnar formats, bundled binaries and data files), import machinery and plugins,
    # and the kernel objects and process calls handlers reach past the usual ones.
    _f("eventfd_memfd", "system", {"posts": 5, "size": 8192}, quick=True),
    _f("thread_introspection", "system", {"threads": 4}, quick=True),
    _f("process_priority", "system", {}, quick=True),
    _f("pidfd_children", "processes", {"children": 3, "code": 4}, quick=True),
    _f("forkserver_pool", "processes", {"n": 6}),
    _f("ctypes_threads", "native", {"threads": 3, "values": [5, 3, 9, 1, 7]}),
    _f("trace_coverage", "observability", {"n": 27, "values": [-3, 0, 4, 7]}, "coverage"),
    _f("plugin_entry_points", "packaging", {"rows": [[1, "a"], [2, "b"]], "text": "Plugin"},
       "pluggy"),
    _f("import_paths", "packaging", {"squares": [3, 4, 12]}),
    _f("babel_gettext", "i18n", {"counts": [1, 2, 5, 22], "amount": 1234567.891,
                                 "when": "2024-06-01T14:30:00+00:00"}, "babel"),
    _f("sqlite_fts_json", "SQL", {"docs": 300, "seed": 23}),
    _f("pypdf_merge", "documents", {"documents": 3, "lines": 45}, "pypdf", "fpdf2"),
    _f("docx_report", "documents", {"rows": 12, "seed": 24, "customer": "Ada & Co"},
       "python-docx"),
    _f("pillow_exif", "images", {"width": 320, "height": 240}, "pillow"),
    _f("imageio_ffmpeg", "SeBS", {"frames": 12, "width": 96, "height": 64}, "imageio-ffmpeg",
       "numpy", mem_mib=512),
    _f("skimage_segment", "images", {"sigma": 2}, "scikit-image", mem_mib=512),
    _f("libmagic_sniff", "ETL", {}, "python-magic", "pylibmagic"),
    _f("fastavro_records", "ETL", {"rows": 2000, "seed": 25}, "fastavro"),
    _f("pandas_formats", "ETL", {"rows": 2000, "seed": 31}, "pandas", "pyarrow", "openpyxl",
       mem_mib=1024),
    _f("duckdb_parquet", "ETL", {"files": 4, "rows": 5000, "threads": 2}, "duckdb", "pyarrow",
       mem_mib=512),
    _f("polars_lazy", "ETL", {"rows": 4000}, "polars", mem_mib=512),
    _f("pyarrow_ipc", "ETL", {"rows": 20000, "batch": 4096}, "pyarrow", mem_mib=512),
    _f("msgpack_protobuf", "codecs", {"items": 50, "lines": 5}, "msgpack", "protobuf"),
    _f("fast_hashes_json", "codecs", {"rows": 500, "seed": 28, "shards": 8}, "xxhash", "mmh3",
       "ujson", "simplejson"),
    _f("attrs_marshmallow", "pattern", {"payloads": [
        {"id": 1, "placed": "2024-06-01", "lines": [{"sku": "AB-1", "qty": 2, "price": 3.5},
                                                    {"sku": "CD-22", "qty": "3", "price": 1.25}]},
        {"id": 2, "placed": "2024-06-02", "lines": [{"sku": "bad", "qty": 0}]},
        {"id": 3, "placed": "2024-06-03", "lines": [], "extra": 1}]},
       "attrs", "cattrs", "marshmallow"),
    _f("cachetools_toolz", "pattern", {"calls": 200, "workers": 4, "rows": 30}, "cachetools",
       "toolz", "more-itertools"),
    _f("jinja2_sandbox", "pattern", {"templates": [
        "{{ name }} {{ items|sort|join(',') }}", "{{ range(10)|sum }}", "{{ x.y.z }}"],
        "rows": [{"name": "a", "total": 3.5}, {"name": "b", "total": 1200}]}, "jinja2"),
    _f("faker_profiles", "pattern", {"seed": 27, "locales": ["en_US", "de_DE", "ja_JP", "fr_FR"],
                                     "count": 50}, "faker"),
    _f("argon2_kdf", "auth", {"password": "correct horse battery staple",
                              "salt": "fixed-salt-16byt"}, "argon2-cffi"),
    _f("x509_chain", "auth", {"seed": 34, "host": "api.example.org"}, "cryptography"),
    _f("nltk_text", "text", {"repeat": 5}, "nltk"),
    _f("networkx_algorithms", "scientific", {"nodes": 300, "seed": 29}, "networkx", "scipy",
       mem_mib=512),
    _f("numexpr_bottleneck", "scientific", {"seed": 30, "n": 200000, "window": 5}, "numexpr",
       "bottleneck", "numpy"),
    _f("statsmodels_arima", "scientific", {"seed": 32, "points": 96}, "statsmodels",
       mem_mib=512),
    _f("xarray_netcdf", "scientific", {"seed": 33, "days": 10}, "xarray", "scipy", "pandas",
       mem_mib=512),
    _f("shapely_pyproj", "geo", {"seed": 26, "points": 500, "cities": {
        "berlin": [13.405, 52.52], "paris": [2.3522, 48.8566]}}, "shapely", "pyproj",
       mem_mib=512),
]


def by_name(names: list[str]) -> list[Function]:
    known = {f.name: f for f in CORPUS}
    missing = [n for n in names if n not in known]
    if missing:
        raise KeyError(f"not in the corpus: {', '.join(missing)}")
    return [known[n] for n in names]
