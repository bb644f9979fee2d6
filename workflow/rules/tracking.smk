# MLflow parent run: one per invocation that runs jobs. Jobs open child runs under it.


onstart:
    start_parent_run()


onsuccess:
    finish_parent_run("FINISHED")


onerror:
    finish_parent_run("FAILED")
