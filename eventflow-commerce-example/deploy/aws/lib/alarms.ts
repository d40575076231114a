/**
 * CloudWatch alarms ($0.10 per alarm per month each), all notifying one SNS topic:
 * - every dead-letter queue holding a message (something was given up on);
 * - the saga: an execution failed (compensated, or needs attention) or timed out;
 * - every function but the authorizer: an invocation error (a crash or a timeout; handled
 *   errors the app answers itself, and queue items reported as failed, are not invocation
 *   errors). The authorizer refuses a token by returning the error `Unauthorized` (what makes
 *   API Gateway answer 401), so every expired or forged token is an invocation error there.
 */
import { Duration } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as actions from 'aws-cdk-lib/aws-cloudwatch-actions';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as sns from 'aws-cdk-lib/aws-sns';
import * as subscriptions from 'aws-cdk-lib/aws-sns-subscriptions';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import { Construct } from 'constructs';

import { DeadLetters } from './messaging';

export interface AlarmsProps {
  readonly deadLetters: readonly DeadLetters[];
  readonly stateMachine: sfn.StateMachine;
  readonly functions: ReadonlyMap<string, lambda.IFunction>;
  readonly email?: string;
}

export class Alarms extends Construct {
  readonly topic: sns.Topic;
  readonly alarms: cloudwatch.Alarm[] = [];

  constructor(scope: Construct, id: string, props: AlarmsProps) {
    super(scope, id);
    this.topic = new sns.Topic(this, 'Topic', { displayName: 'eventflow commerce alarms', enforceSSL: true });
    if (props.email) {
      this.topic.addSubscription(new subscriptions.EmailSubscription(props.email));
    }
    const action = new actions.SnsAction(this.topic);
    const aboveZero = (alarmId: string, description: string, metric: cloudwatch.IMetric) => {
      const alarm = new cloudwatch.Alarm(this, alarmId, {
        alarmDescription: description,
        metric,
        threshold: 0,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
        evaluationPeriods: 1,
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
      });
      alarm.addAlarmAction(action);
      this.alarms.push(alarm);
    };
    const minute = Duration.minutes(1);
    for (const { id: name, queue } of props.deadLetters) {
      aboveZero(
        `${name}DlqNotEmpty`,
        `Dead letters in ${name}: inspect, fix, then redrive (SQS console, "Start DLQ redrive")`,
        queue.metricApproximateNumberOfMessagesVisible({ period: minute, statistic: 'Maximum' }),
      );
    }
    aboveZero(
      'SagaExecutionsFailed',
      'A PlaceOrder saga failed: Saga.Compensated (order cancelled) or Saga.NeedsAttention',
      props.stateMachine.metricFailed({ period: minute, statistic: 'Sum' }),
    );
    aboveZero(
      'SagaExecutionsTimedOut',
      'A PlaceOrder saga timed out',
      props.stateMachine.metricTimedOut({ period: minute, statistic: 'Sum' }),
    );
    for (const [handler, fn] of props.functions) {
      if (handler === 'authorizer') {
        continue;
      }
      aboveZero(
        `${handler}Errors`,
        `Function ${handler} crashed or timed out`,
        fn.metricErrors({ period: Duration.minutes(5), statistic: 'Sum' }),
      );
    }
  }
}
