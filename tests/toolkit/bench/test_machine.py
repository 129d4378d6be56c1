from toolkit.bench import machine as environment


def test_environment_records_the_machine_and_versions():
    env = environment.environment()
    assert env["cpu"] and env["cores"] >= 1
    assert set(env["versions"]) >= {"torch", "onnxruntime", "tvm", "numpy"}
    assert env["versions"]["onnxruntime"]
    assert len(env["load_average"]) == 3


def test_a_powersave_governor_and_a_busy_machine_are_warned_about():
    env = {"cores": 2, "cpu_governor": "powersave", "load_average": [1.9, 1.0, 0.5]}
    warnings = environment.skew_warnings(env)
    assert any("governor is 'powersave'" in w for w in warnings)
    assert any("busy" in w and "1.90" in w for w in warnings)
    quiet = {"cores": 2, "cpu_governor": "performance", "load_average": [0.1, 0.1, 0.1]}
    assert environment.skew_warnings(quiet) == []


def test_machine_slug_is_a_plain_directory_name():
    slug = environment.machine_slug({"cpu": "Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz", "cores": 2, "gpu": None})
    assert slug == "intel-xeon-platinum-8375c-cpu-2-90ghz-2c"
