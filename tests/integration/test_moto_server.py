"""moto keeps its accounts in the process, not in its server: a local stack must be removed
when its sandbox stops, or the next one deployed by that name in the same test process finds
the first one's secret already there."""

from __future__ import annotations

from devtools import aws


def test_a_removed_local_stack_can_be_deployed_again_by_its_name() -> None:
    with aws.MotoServer() as moto:
        first = aws.deploy_local_stack("pk_first", endpoint_url=moto.endpoint_url, name="again")
        results = aws.add_results_queue(first)
        sqs = aws.client("sqs", moto.endpoint_url)
        sqs.send_message(QueueUrl=results.url, MessageBody="the first stack's result")
        aws.remove_local_stack(first)
        assert "again-results" not in str(sqs.list_queues().get("QueueUrls", []))
        with aws.MotoServer() as other:  # another server in this process: the same accounts
            second = aws.deploy_local_stack(
                "pk_second", endpoint_url=other.endpoint_url, name="again"
            )
            secrets = aws.client("secretsmanager", other.endpoint_url)
            value = secrets.get_secret_value(SecretId=second.secret_arn)["SecretString"]
            assert value == "pk_second"
            stacks = aws.client("cloudformation", other.endpoint_url).describe_stacks()["Stacks"]
            live = [s["StackName"] for s in stacks if s["StackStatus"] != "DELETE_COMPLETE"]
            assert live.count("again") == 1  # (other tests' stacks share the process's moto)
            # Its results queue is its own: nothing the first stack published is in it.
            fresh = aws.add_results_queue(second)
            queue = aws.client("sqs", other.endpoint_url)
            assert "Messages" not in queue.receive_message(QueueUrl=fresh.url, WaitTimeSeconds=0)
            aws.remove_local_stack(second)
