/**
 * The bus and the queues: one custom EventBridge bus; each consumer gets an SQS queue with a
 * dead-letter queue, fed by EventBridge rules. The app's EventBridge adapter works the same way
 * (`eventflow-bus/src/eventbridge.rs`: a rule with an event pattern targeting an SQS queue), so
 * the SQS message body is the EventBridge event whose `detail` is the app's message envelope.
 */
import { Duration } from 'aws-cdk-lib';
import * as events from 'aws-cdk-lib/aws-events';
import * as targets from 'aws-cdk-lib/aws-events-targets';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';

import { BUS_NAME, MAX_RECEIVES } from './contract';
import { QUEUE_NAME, RULE_NAME } from './names';

/** A dead-letter queue and what it catches, for the alarms. */
export interface DeadLetters {
  readonly id: string;
  readonly queue: sqs.Queue;
}

export interface QueueWithDlq {
  readonly queue: sqs.Queue;
  readonly dlq: sqs.Queue;
}

/** Names for a queue the app opens by name; other queues get names CloudFormation generates. */
export interface QueueNames {
  readonly queueName: string;
  readonly dlqName: string;
}

/** Settings every queue shares: encrypted with SQS's own key (no KMS key to pay for, and
 * EventBridge can deliver to it), TLS required. */
const COMMON: sqs.QueueProps = {
  encryption: sqs.QueueEncryption.SQS_MANAGED,
  enforceSSL: true,
};

export class Messaging extends Construct {
  readonly bus: events.EventBus;
  /** Where EventBridge puts an event it could not deliver to a target queue. */
  readonly undelivered: sqs.Queue;
  /** Every dead-letter queue, for the alarms. */
  readonly deadLetters: DeadLetters[] = [];
  /** The rule names taken, to refuse a second rule of one name. */
  private readonly ruleNames = new Set<string>();

  constructor(scope: Construct, id: string) {
    super(scope, id);
    this.bus = new events.EventBus(this, 'Bus', { eventBusName: BUS_NAME });
    // One dead-letter queue for all rule targets: EventBridge tags each message with the rule
    // and target that failed (RULE_ARN, TARGET_ARN, ERROR_CODE attributes), so one queue (and
    // one alarm) tells them apart.
    this.undelivered = this.deadLetterQueue('RuleTargets');
  }

  /** A dead-letter queue, registered for an alarm. */
  deadLetterQueue(id: string, queueName?: string): sqs.Queue {
    const queue = new sqs.Queue(this, `${id}Dlq`, {
      ...COMMON,
      queueName: queueName && checkedQueueName(queueName),
      retentionPeriod: Duration.days(14),
    });
    this.deadLetters.push({ id, queue });
    return queue;
  }

  /**
   * A work queue for a function that may run `functionTimeout`: its messages stay hidden three
   * times that long while a batch is handled (Lambda requires at least the timeout), and go to
   * their dead-letter queue after {@link MAX_RECEIVES} receives. `names` names both.
   */
  queue(id: string, functionTimeout: Duration, names?: QueueNames): QueueWithDlq {
    const dlq = this.deadLetterQueue(id, names?.dlqName);
    const queue = new sqs.Queue(this, `${id}Queue`, {
      ...COMMON,
      queueName: names && checkedQueueName(names.queueName),
      visibilityTimeout: Duration.seconds(functionTimeout.toSeconds() * 3),
      retentionPeriod: Duration.days(4),
      deadLetterQueue: { queue: dlq, maxReceiveCount: MAX_RECEIVES },
    });
    return { queue, dlq };
  }

  /**
   * The rule `name` on the bus sending the events `pattern` selects (an EventBridge event pattern,
   * used verbatim) to `queue`. EventBridge retries a failed delivery for up to a day, then
   * dead-letters it.
   */
  rule(name: string, queue: sqs.IQueue, pattern: Record<string, unknown>, description: string): events.Rule {
    if (!RULE_NAME.test(name)) {
      throw new Error(`rule name ${JSON.stringify(name)}: EventBridge takes 1 to 64 of [.-_A-Za-z0-9]`);
    }
    if (this.ruleNames.has(name)) {
      throw new Error(`two rules named ${name}: subscription names must be unique across the contexts`);
    }
    this.ruleNames.add(name);
    return new events.Rule(this, `Rule-${name}`, {
      ruleName: name,
      eventBus: this.bus,
      description,
      // A copy, as exported: CDK keeps keys it does not know (`detail-type`) as they are.
      eventPattern: structuredClone(pattern) as events.EventPattern,
      targets: [
        new targets.SqsQueue(queue, {
          deadLetterQueue: this.undelivered,
          retryAttempts: 185,
          maxEventAge: Duration.hours(24),
        }),
      ],
    });
  }
}

function checkedQueueName(name: string): string {
  if (!QUEUE_NAME.test(name)) {
    throw new Error(`queue name ${JSON.stringify(name)}: SQS takes 1 to 80 of [-_A-Za-z0-9]`);
  }
  return name;
}
