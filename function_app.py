"""The Bridgework function app: registers each area's blueprint and nothing else."""

import azure.durable_functions as df
import azure.functions as func

from functions import activities, api, cutover, orchestrators
from shared.gc_tuning import tune_garbage_collector

app = df.DFApp(http_auth_level=func.AuthLevel.FUNCTION)
for area in (api, orchestrators, activities, cutover):
    app.register_functions(area.bp)

tune_garbage_collector()  # last, so what the imports built is frozen out of every collection
